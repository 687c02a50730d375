"""One-row products (a batch-one sampling step) in each weight layout `fast_matmul` chose between.

For each matrix shape (out x in, as PyTorch stores an LSTM's weights): shift + x Wᵀ for one
row x, with W read as a transposed view of PyTorch's layout (`addmm(b, x, W.t())`), as a
transposed contiguous copy, and as `column_blocks` (one block of columns per thread from
4 MB on). Layouts take turns in rounds, so a noisy machine slows all alike; the ratios
within one run are the result. Prints JSON lines (microseconds per product, best round).

    python benchmarks/one_row_product.py                          # 4H x H for H = 128, 256, 512, 1024
    python benchmarks/one_row_product.py --hidden 512 --threads 1,2,4
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from contestant import timed

from charlstm.fast_matmul import affine, column_blocks


def layouts(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"view": weight.t(), "contiguous": weight.t().contiguous(), "column_blocks": column_blocks(weight)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="128,256,512,1024", help="Comma-separated H; W is 4H x H.")
    parser.add_argument("--threads", default=str(torch.get_num_threads()), help="Comma-separated thread counts.")
    parser.add_argument("--repeat", type=int, default=2000, help="Products per round.")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for hidden in map(int, args.hidden.split(",")):
            weight, x, shift = torch.randn(4 * hidden, hidden), torch.randn(1, hidden), torch.randn(4 * hidden)
            kept = layouts(weight)
            best = dict.fromkeys(kept, float("inf"))
            for _ in range(args.rounds):
                for name, w in kept.items():  # affine on a 2-D W is addmm(shift, x, W)
                    best[name] = min(best[name], timed(partial(affine, shift, x, w), args.repeat, cpu))
            row = {"benchmark": "one_row_product", "threads": threads, "shape": [4 * hidden, hidden]}
            row["megabytes"] = round(weight.numel() * 4 / 2**20, 2)
            row["blocks"] = 1 if kept["column_blocks"].dim() == 2 else kept["column_blocks"].shape[0]
            row.update({f"{name}_us": round(seconds / args.repeat * 1e6, 2) for name, seconds in best.items()})
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
