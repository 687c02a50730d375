"""The work around the kernels in one training step, piece by piece, against the step.

At the batch-16 shapes budget sizing picks for short runs a step takes 20-40 ms on two
cores, so a millisecond of bookkeeping is a few percent of every run. Times each piece
charlstm's step does besides forward and backward, next to what it replaced: AdamW's
per-parameter loop against the fused kernel, torch.manual_seed against seeding the
device's own generator. Prints JSON lines (microseconds, best of --rounds).

    python benchmarks/step_overhead.py                       # 2x128 and 2x192, batch 16 x 64
    python benchmarks/step_overhead.py --hidden 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial

import torch
from contestant import timed
from torch import nn

from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import load_data
from charlstm.device import seed_device
from charlstm.runs import place
from charlstm.trainer import Trainer


def microseconds(work: Callable[[], object], repeat: int, rounds: int) -> float:
    best = min(timed(work, repeat, torch.device("cpu")) for _ in range(rounds))
    return round(best / repeat * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 192])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len, device="cpu", max_time=0, val_frac=0.0)
    data = load_data(config)
    cpu = torch.device("cpu")
    for hidden in args.hidden:
        model_config = ModelConfig(vocab_size=len(data.vocabulary), hidden=hidden)
        trainer = Trainer(model_config, config, data, None, place(config))
        for _ in range(5):
            trainer.train_step()
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in trainer.optimizer.param_groups]
        per_parameter = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))
        clip = partial(nn.utils.clip_grad_norm_, list(trainer.model.parameters()), 1.0)
        row = {
            "benchmark": "step_overhead",
            "shape": f"2x{hidden}",
            "batch": f"{args.batch_size}x{args.seq_len}",
            "train_step_us": microseconds(trainer.train_step, 10, args.rounds),
            "adamw_fused_us": microseconds(trainer.optimizer.step, 50, args.rounds),
            "adamw_per_parameter_us": microseconds(per_parameter.step, 50, args.rounds),
            "seed_device_us": microseconds(lambda: seed_device(cpu, 1), 500, args.rounds),
            "torch_manual_seed_us": microseconds(lambda: torch.manual_seed(1), 500, args.rounds),
            "clip_grad_norm_us": microseconds(clip, 50, args.rounds),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
