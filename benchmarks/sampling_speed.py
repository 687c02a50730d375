"""Sampling chars/s: charlstm's explicit-step sampler against the naive loop that calls the
fused nn.LSTM once per character, on the same weights, in the same process.

On glibc the naive loop's speed depends on malloc's state: from one process to the next it
ran at either ~140 or ~380 chars/s here. Run it a few times, and once with freed memory
kept (GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824) to
see the loop without the page faults; charlstm's own step does not move.

    python benchmarks/sampling_speed.py                 # 2x512 LSTM, the issue's reference shape
    python benchmarks/sampling_speed.py --hidden 256 --chars 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from charlstm.model import CharLSTM, ModelConfig
from charlstm.sample import SamplingConfig, generate
from charlstm.tokenizer import Vocabulary


def naive(model: CharLSTM, length: int, generator: torch.Generator) -> None:
    """What most char-rnn ports do: model.forward on one character, sample, repeat."""
    ids, state = torch.zeros(1, 1, dtype=torch.long), None
    with torch.inference_mode():
        for _ in range(length):
            logits, state = model(ids, state)
            probs = torch.softmax(logits[0, -1] / 0.8, -1)
            ids = torch.multinomial(probs, 1, generator=generator).view(1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()
    vocabulary = Vocabulary("".join(chr(32 + i) for i in range(65)))
    model = CharLSTM(ModelConfig(len(vocabulary), cell=args.cell, layers=args.layers, hidden=args.hidden)).eval()
    sampling = SamplingConfig(0.8)
    naive_chars = max(args.chars // 10, 200)
    charlstm = bare = 0.0
    for _ in range(args.rounds):
        start = time.perf_counter()
        "".join(generate(model, vocabulary, " ", args.chars, sampling, seed=0))
        charlstm = max(charlstm, args.chars / (time.perf_counter() - start))
        start = time.perf_counter()
        naive(model, naive_chars, torch.Generator().manual_seed(0))
        bare = max(bare, naive_chars / (time.perf_counter() - start))
    row = {
        "benchmark": "sampling_speed",
        "shape": f"{args.layers}x{args.hidden}",
        "cell": args.cell,
        "charlstm_chars_per_s": round(charlstm),
        "naive_chars_per_s": round(bare),
        "ratio": round(charlstm / bare, 2),
    }
    print(json.dumps(row), flush=True)
    print(
        f"{row['shape']} {args.cell}: charlstm {row['charlstm_chars_per_s']} chars/s, naive nn.LSTM per char "
        f"{row['naive_chars_per_s']} chars/s, ratio {row['ratio']}x",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
