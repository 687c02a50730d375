"""Validation loss per wall-clock: `charlstm train` on tiny-shakespeare for a fixed time.

The corpus is --corpus PATH, or tiny-shakespeare as `charlstm corpus get tinyshakespeare`
fetched it (see corpus_arg.py).

Prints one JSON line per run (final validation loss on the full validation split, in
nats and bits per character) and a short table. Extra arguments after `--` are passed
to `charlstm train`, e.g. to compare settings:

    python benchmarks/quality.py --seconds 90 300
    python benchmarks/quality.py --seconds 90 --corpus my-text.txt
    python benchmarks/quality.py --seconds 90 -- --batch-size 32 --seq-len 64
    python benchmarks/quality.py --seconds 90 300 --repeat 3   # a range, run after run
    python benchmarks/quality.py --seconds 90 --eval-share 1   # evaluations unpaced (before pacing)

`--eval-share` sets the library setting of that name (the most of the budget periodic
evaluations may take; 0.05 by default), so the run goes through `charlstm.train` instead of
the command, which has no option for it.

Each row also says how much of the budget went to evaluating, the steps budget sizing
promised against those taken (and, for a sized run, the steps/s its probe read for every shape it
timed beside the rate the run achieved), the precision, the CPU and the date, so rows from different
machines and hours can sit in one results file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from corpus_arg import add_corpus_argument, describe, find_corpus

API_TRAIN = (
    "import sys, charlstm; charlstm.train(sys.argv[1], checkpoints=sys.argv[2], max_time=float(sys.argv[3]), "
    "sample_every=0, eval_share=float(sys.argv[4]))"
)


def run(seconds: float, extra: list[str], corpus: Path, eval_share: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as root:
        cmd = [
            sys.executable,
            "-m",
            "charlstm",
            "train",
            str(corpus),
            "--max-time",
            f"{seconds}s",
            "--sample-every",
            "0",
            "--checkpoints",
            root,
            *extra,
        ]
        if eval_share is not None:
            cmd = [sys.executable, "-c", API_TRAIN, str(corpus), root, str(seconds), str(eval_share)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = next(Path(root).iterdir())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        config = json.loads((run / "config.json").read_text())
    final = metrics[-1]
    sized = config["sized_for_budget"] or {}
    return {
        "benchmark": "quality",
        **describe(corpus),
        "seconds": seconds,
        "options": " ".join(extra),
        "eval_share": config["train"]["eval_share"],
        "shape": f"{config['model']['layers']}x{config['model']['hidden']}, batch {config['train']['batch_size']}",
        "sized_for_budget": config["sized_for_budget"] is not None,
        "steps": final["step"],
        "val_loss": round(final["val_loss"], 4),
        "val_bpc": round(final["val_bpc"], 4),
        "best_val_loss": round(min(m["val_loss"] for m in metrics), 4),
        "evaluations": len(metrics),
        "evaluating_seconds": final.get("evaluating"),
        "evaluating_share": round(final.get("evaluating", 0) / seconds, 3),
        "predicted_steps": sized.get("predicted_steps"),
        "probed_steps_per_second": sized.get("steps_per_second"),
        "probed_steps": sized.get("steps"),
        "achieved_steps_per_second": sized.get("achieved_steps_per_second"),
        "precision": config["train"]["precision"],
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
    }


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (Linux), else the platform's words."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[90, 300])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each budget, one after another")
    parser.add_argument("--eval-share", type=float, default=None, help="the library's eval_share (no extra options)")
    add_corpus_argument(parser)
    parser.add_argument("extra", nargs="*", help="options for charlstm train (after --)")
    args = parser.parse_args()
    corpus = find_corpus(args.corpus)
    if args.eval_share is not None and args.extra:
        parser.error("--eval-share trains through charlstm.train, which takes no command options")
    rows = []
    for seconds in [s for s in args.seconds for _ in range(args.repeat)]:
        row = run(seconds, args.extra, corpus, args.eval_share)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"{'seconds':>8} {'steps':>7} {'val nats/char':>14} {'bits/char':>10}  shape / options", file=sys.stderr)
    for r in rows:
        print(
            f"{r['seconds']:>8g} {r['steps']:>7} {r['val_loss']:>14.4f} {r['val_bpc']:>10.4f}  "
            f"{r['shape']}{' (sized for the budget)' if r['sized_for_budget'] else ''} {r['options']}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
