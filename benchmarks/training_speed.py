"""Training chars/s: charlstm's trainer against bare nn.LSTM loops of the same shape.

Three contestants take turns in rounds, so a noisy machine slows all of them alike;
compare the ratios, not the absolute numbers:

* charlstm: its trainer, at the given precision, with freed memory kept (its default);
* bare: the shortest honest nn.LSTM loop, same precision, same process (same allocator),
  with fused AdamW: the best bare configuration;
* baseline: the bare loop in fp32 in a child process that keeps glibc's default malloc,
  with AdamW's default per-parameter loop: what a plain PyTorch script gets. The
  allocator is set per process, so the baseline needs its own; it steps only when told
  to, between the others' rounds.

Prints JSON lines, then a table.

    python benchmarks/training_speed.py                    # 2x128, 2x256, 2x512; fp32 and bf16
    python benchmarks/training_speed.py --hidden 512 --precision bf16
    python benchmarks/training_speed.py --device cuda      # on a GPU: cuDNN for all three
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

import torch
from contestant import Child, serve, timed
from torch import nn

from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import Data, load_data
from charlstm.device import autocast, keep_freed_memory, resolve_device
from charlstm.optimizer import fused_adamw
from charlstm.runs import place
from charlstm.trainer import Trainer


def bare_loop(args: argparse.Namespace, hidden: int, precision: str, data: Data, plain: bool = False):
    """The shortest honest training step: embedding, nn.LSTM, linear, AdamW; nothing else.
    AdamW is fused where PyTorch has the kernel, unless `plain`: a plain script's AdamW
    runs its per-parameter loop on the CPU."""
    device, vocab, batch, seq = resolve_device(args.device), len(data.vocabulary), args.batch_size, args.seq_len
    embedding = ModelConfig(vocab_size=vocab).embedding
    torch.manual_seed(0)
    emb, rnn, dec = (
        nn.Embedding(vocab, embedding).to(device),
        nn.LSTM(embedding, hidden, 2, batch_first=True).to(device),
        nn.Linear(hidden, vocab).to(device),
    )
    params = [*emb.parameters(), *rnn.parameters(), *dec.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3) if plain else fused_adamw(params, lr=1e-3)
    tokens = data.train.to(device)
    n = (len(tokens) - 1) // batch
    x_all, y_all = tokens[: batch * n].view(batch, n), tokens[1 : batch * n + 1].view(batch, n)
    position = [0]

    def step() -> None:
        i = position[0] % (n // seq)
        position[0] += 1
        x, y = x_all[:, i * seq : (i + 1) * seq].long(), y_all[:, i * seq : (i + 1) * seq].long()
        with autocast(device, precision):
            out, _ = rnn(emb(x))
            logits = dec(out)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def load(args: argparse.Namespace, precision: str) -> tuple[TrainConfig, Data]:
    shape = {"batch_size": args.batch_size, "seq_len": args.seq_len}
    config = TrainConfig(**shape, device=args.device, precision=precision, max_time=0, val_frac=0.0)
    return config, load_data(config)


def serve_baseline(args: argparse.Namespace) -> None:
    """The child: a bare fp32 loop on glibc's default malloc."""
    _, data = load(args, "fp32")
    serve(bare_loop(args, args.hidden[0], "fp32", data, plain=True), resolve_device(args.device))


def start_baseline(args: argparse.Namespace, hidden: int) -> Child:
    shape = ["--hidden", str(hidden), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    return Child([__file__, "--serve-baseline", "--device", args.device, *shape])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args)
        return
    device = resolve_device(args.device)
    keep_freed_memory()
    rows = []
    for hidden in args.hidden:
        baseline = start_baseline(args, hidden)
        baseline(2)
        for precision in args.precision:
            config, data = load(args, precision)
            model_config = ModelConfig(vocab_size=len(data.vocabulary), hidden=hidden)
            trainer = Trainer(model_config, config, data, None, place(config))
            bare = bare_loop(args, hidden, precision, data)
            for warm in (trainer.train_step, bare):
                timed(warm, 2, device)
            contestants = {
                "charlstm": partial(timed, trainer.train_step, device=device),
                "bare": partial(timed, bare, device=device),
                "baseline": baseline,
            }
            seconds = dict.fromkeys(contestants, 0.0)
            order = list(contestants)
            for _ in range(args.rounds):  # each round starts with the next contestant
                for name in order:
                    seconds[name] += contestants[name](args.steps)
                order = order[1:] + order[:1]
            t_charlstm, t_bare, t_baseline = seconds.values()
            chars = args.rounds * args.steps * args.batch_size * args.seq_len
            row = {
                "benchmark": "training_speed",
                "shape": f"2x{hidden}",
                "device": str(device),
                "precision": precision,
                "batch": f"{args.batch_size}x{args.seq_len}",
                "charlstm_chars_per_s": round(chars / t_charlstm),
                "bare_chars_per_s": round(chars / t_bare),
                "ratio": round(t_bare / t_charlstm, 3),
                "baseline_chars_per_s": round(chars / t_baseline),
                "vs_baseline": round(t_baseline / t_charlstm, 3),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        baseline.close()
    print(
        f"{'shape':>6} {'precision':>9} {'charlstm':>10} {'bare':>10} {'ratio':>6} {'baseline':>10} {'vs base':>8}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['shape']:>6} {r['precision']:>9} {r['charlstm_chars_per_s']:>10} {r['bare_chars_per_s']:>10} "
            f"{r['ratio']:>6} {r['baseline_chars_per_s']:>10} {r['vs_baseline']:>8}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
