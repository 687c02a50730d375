"""Training chars/s: charlstm's trainer against a bare nn.LSTM loop of the same shape.

Both run in this one process, interleaved in rounds, so a noisy machine slows both alike;
compare the ratio, not the absolute numbers. Prints JSON lines, then a table.

    python benchmarks/training_speed.py                    # 2x128, 2x256, 2x512; fp32 and bf16
    python benchmarks/training_speed.py --hidden 512 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from charlstm.train import TrainConfig, Trainer, keep_freed_memory, load_data


def bare_loop(vocab: int, hidden: int, embedding: int, batch: int, seq: int, precision: str, tokens: torch.Tensor):
    """The shortest honest training step: embedding, nn.LSTM, linear, AdamW; nothing else."""
    torch.manual_seed(0)
    emb, rnn, dec = (
        nn.Embedding(vocab, embedding),
        nn.LSTM(embedding, hidden, 2, batch_first=True),
        nn.Linear(hidden, vocab),
    )
    params = [*emb.parameters(), *rnn.parameters(), *dec.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    n = (len(tokens) - 1) // batch
    x_all, y_all = tokens[: batch * n].view(batch, n), tokens[1 : batch * n + 1].view(batch, n)
    position = [0]

    def step() -> None:
        i = position[0] % (n // seq)
        position[0] += 1
        x, y = x_all[:, i * seq : (i + 1) * seq].long(), y_all[:, i * seq : (i + 1) * seq].long()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out, _ = rnn(emb(x))
            logits = dec(out)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-keep-freed-memory", action="store_true", help="measure with glibc's default malloc")
    args = parser.parse_args()
    if not args.no_keep_freed_memory:
        keep_freed_memory()
    corpus = TrainConfig().corpus
    rows = []
    for hidden in args.hidden:
        for precision in args.precision:
            config = TrainConfig(
                corpus=corpus,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                device="cpu",
                precision=precision,
                max_time=0,
                val_frac=0.0,
            )
            data = load_data(config)
            from charlstm.model import ModelConfig

            model_config = ModelConfig(vocab_size=len(data.vocabulary), hidden=hidden)
            trainer = Trainer(model_config, config, data, run_dir=None)
            bare = bare_loop(
                len(data.vocabulary),
                hidden,
                model_config.embedding,
                args.batch_size,
                args.seq_len,
                precision,
                data.train,
            )
            for warm in (trainer.train_step, bare):
                timed(warm, 2)
            t_charlstm = t_bare = 0.0
            for _ in range(args.rounds):
                t_charlstm += timed(trainer.train_step, args.steps)
                t_bare += timed(bare, args.steps)
            chars = args.rounds * args.steps * args.batch_size * args.seq_len
            row = {
                "benchmark": "training_speed",
                "shape": f"2x{hidden}",
                "precision": precision,
                "batch": f"{args.batch_size}x{args.seq_len}",
                "charlstm_chars_per_s": round(chars / t_charlstm),
                "bare_chars_per_s": round(chars / t_bare),
                "ratio": round(t_bare / t_charlstm, 3),
                "keep_freed_memory": not args.no_keep_freed_memory,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"{'shape':>6} {'precision':>9} {'charlstm':>10} {'bare':>10} {'ratio':>6}", file=sys.stderr)
    for r in rows:
        print(
            f"{r['shape']:>6} {r['precision']:>9} {r['charlstm_chars_per_s']:>10} {r['bare_chars_per_s']:>10} "
            f"{r['ratio']:>6}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
