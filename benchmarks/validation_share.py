"""The share of a run's wall time spent evaluating, whole held-out split against the default bound.

Before `--val-chars`, every evaluation scored the whole held-out tenth: on a 200 MB corpus
that is 20 M characters per evaluation, and training stood still while it ran. This trains
the same short runs twice, once with `--val-chars 0` (the whole split, as before) and once
with the default (TrainConfig.val_chars), and prints, per corpus and size, the wall time,
the seconds spent in evaluations and their share. Corpora:

* big: ~`--size-mb` MB built from this Python's standard-library source, repeated, in a
  temporary folder (its token cache is built once, before any timing);
* small: `--corpus PATH`, else tiny-shakespeare fetched by `charlstm corpus get` (corpus_arg).

Prints one JSON line per run, then a table.

    python benchmarks/validation_share.py                          # 2x128 and 2x512, 500 steps, both corpora
    python benchmarks/validation_share.py --corpora big --hidden 128 --steps 250
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from corpus_arg import add_corpus_argument, describe, find_corpus

from charlstm.config import TrainConfig
from charlstm.data import load_data
from charlstm.device import keep_freed_memory
from charlstm.runs import start


def build_big_corpus(folder: Path, megabytes: float) -> Path:
    """~`megabytes` MB of standard-library source, the files in a fixed order, repeated."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py")))
    text = "".join(c for c in text if c.isprintable() or c in "\n\t")  # a modest vocabulary
    want = int(megabytes * 1_000_000)
    path = folder / "stdlib-repeated.txt"
    with path.open("w", encoding="utf-8") as f:
        written = 0
        while written < want:
            part = text[: want - written]
            f.write(part)
            written += len(part)
    return path


def measure(corpus: Path, hidden: int, val_chars: int, args: argparse.Namespace, root: Path) -> dict:
    """One short run; wall time of the run and the seconds its evaluations took."""
    config = TrainConfig(
        corpus=str(corpus),
        max_steps=args.steps,
        max_time=0,
        eval_every=args.eval_every,
        sample_every=0,
        val_chars=val_chars,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
    )
    trainer = start({"layers": 2, "hidden": hidden}, config, root)
    evaluate, spent = trainer.evaluate, [0.0]

    def timed_evaluation(whole: bool = False):
        began = time.perf_counter()
        result = evaluate(whole)
        spent[0] += time.perf_counter() - began
        return result

    trainer.evaluate = timed_evaluation
    began = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - began
    scored = trainer.validation_scored()
    return {
        "shape": f"2x{hidden}",
        "mode": "whole split" if val_chars == 0 else f"default ({val_chars:,})",
        "val_chars_scored": scored["characters"],
        "val_chars_held_out": scored["of"],
        "steps": result["step"],
        "evaluations": len(list(trainer.run_dir.joinpath("metrics.jsonl").read_text().splitlines())),
        "wall_s": round(wall, 2),
        "eval_s": round(spent[0], 2),
        "eval_share": round(spent[0] / wall, 4),
        "best_val_loss": round(result["best_val_loss"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_argument(parser)
    parser.add_argument("--corpora", nargs="+", choices=("big", "small"), default=["big", "small"])
    parser.add_argument("--size-mb", type=float, default=200.0, help="size of the big corpus [default: 200]")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=TrainConfig().eval_every)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_freed_memory()  # as charlstm train does
    rows = []
    with tempfile.TemporaryDirectory(prefix="validation-share-") as folder:
        corpora = {}
        if "small" in args.corpora:
            corpora["small"] = find_corpus(args.corpus)
        if "big" in args.corpora:
            corpora["big"] = build_big_corpus(Path(folder), args.size_mb)
        for name, corpus in corpora.items():
            load_data(TrainConfig(corpus=str(corpus)))  # the token cache, built before any timing
            facts = {"corpus": corpus.name} if name == "big" else describe(corpus)
            for hidden in args.hidden:
                for val_chars in (0, TrainConfig().val_chars):
                    row = facts | measure(corpus, hidden, val_chars, args, Path(folder) / "runs")
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"\n{'corpus':<24} {'shape':<7} {'evaluated':<20} {'wall s':>8} {'eval s':>8} {'share':>7}", file=sys.stderr)
    for r in rows:
        print(
            f"{r['corpus']:<24} {r['shape']:<7} {r['mode']:<20} {r['wall_s']:>8.1f} {r['eval_s']:>8.1f} "
            f"{r['eval_share']:>6.1%}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
