"""The training recipe and sizing's bar at fixed step counts: validation loss by shape, steps,
learning rate, warmup, seed and corpus, with the machine's speed taken out.

A time budget buys each shape a number of steps on a given machine (`charlstm train` prints
the rates its probe read; quality.py's rows keep them). Training that shape for exactly that
many steps reaches the same loss whatever else the machine is doing, so the runs here go
--jobs at a time, one thread each, and compare settings over seeds instead of over hours.
Each run evaluates once, at its end, on the whole validation split.

    python benchmarks/recipe.py --corpus tinyshakespeare.txt --runs 192x16@2500 256x32@3000 \\
        --lr 1.2e-2 2e-2 --seeds 1337 7 --corpora english builtin --out recipe.jsonl

A run is HIDDENxBATCH@STEPS; --lr, --warmup and --seeds multiply the runs. Rows already in
--out (same corpus, run, lr, warmup and seed) are skipped, so a study can be stopped and
started again. Prints one JSON line per run and a table of means over seeds at the end.

`--corpora builtin-cut` is the built-in corpus cut to the length of --corpus: source code the
size of the English text, which tells what the kind of text does from what its size does.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from corpus_arg import add_corpus_argument, describe, find_corpus
from quality import cpu_name

from charlstm.corpus import find_source, read_text
from charlstm.token_cache import load_tokens

TRAIN = (
    "import json, sys, charlstm; options = json.loads(sys.argv[1]); "
    "print(charlstm.train(options.pop('corpus'), options.pop('checkpoints'), **options))"
)


def builtin_text(length: int) -> str:
    """The first `length` characters of the built-in corpus, read by charlstm's own reader
    (the token cache `charlstm train` reads it through), so the cut is exactly what a run sees."""
    loaded = load_tokens(find_source(None), what="the built-in corpus")
    return loaded.vocabulary.decode(loaded.tokens[:length])


def parse_run(text: str) -> tuple[int, int, int]:
    """'192x16@2500' -> (hidden 192, batch 16, 2,500 steps)."""
    try:
        shape, steps = text.split("@")
        hidden, batch = shape.split("x")
        return int(hidden), int(batch), int(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a run is HIDDENxBATCH@STEPS, e.g. 192x16@2500; got {text!r}") from None


def key(corpus: str, run: str, lr: float, warmup: int, seed: int) -> tuple:
    """What makes two rows the same run."""
    return (corpus, run, lr, warmup, seed)


def train(
    corpus: Path | None, corpus_name: str, hidden: int, batch: int, steps: int, lr: float, warmup: int, seed: int
) -> dict:
    """One run of `steps` steps in a child process on one thread; its final validation loss."""
    with tempfile.TemporaryDirectory() as root:
        options = {
            "corpus": str(corpus) if corpus else None,
            "checkpoints": root,
            "hidden": hidden,
            "batch_size": batch,
            "max_steps": steps,
            "max_time": 0,
            "eval_every": steps,
            "sample_every": 0,
            "lr": lr,
            "warmup_steps": warmup,
            "seed": seed,
            "precision": "fp32",
            "device": "cpu",
        }
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        started = datetime.datetime.now()
        subprocess.run(
            [sys.executable, "-c", TRAIN, json.dumps(options)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = (datetime.datetime.now() - started).total_seconds()
        run = next(Path(root).iterdir())
        final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        config = json.loads((run / "config.json").read_text())
    chars = steps * batch * config["train"]["seq_len"]
    return {
        "benchmark": "recipe",
        "corpus": corpus_name,
        "run": f"{hidden}x{batch}@{steps}",
        "layers": config["model"]["layers"],
        "hidden": hidden,
        "batch_size": batch,
        "steps": final["step"],
        "lr": lr,
        "warmup": warmup,
        "seed": seed,
        "val_loss": round(final["val_loss"], 4),
        "parameters": config["parameters"],
        "chars_per_parameter": round(chars / config["parameters"], 2),
        "seconds_one_thread": round(seconds, 1),
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
    }


def run_plan(corpora: dict[str, Path | None], args: argparse.Namespace) -> list[dict]:
    """Every run of the study not already in --out, --jobs at a time; all its rows on these corpora."""
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    seen = {key(row["corpus"], row["run"], row["lr"], row["warmup"], row["seed"]) for row in done}
    plan = [
        (corpus, name, hidden, batch, steps, lr, warmup, seed)
        for (name, corpus), (hidden, batch, steps), lr, warmup, seed in itertools.product(
            corpora.items(), args.runs, args.lr, args.warmup, args.seeds
        )
        if key(name, f"{hidden}x{batch}@{steps}", lr, warmup, seed) not in seen
    ]
    rows = [row for row in done if row["corpus"] in corpora]
    with ThreadPoolExecutor(args.jobs) as pool, args.out.open("a") as out:
        for row in pool.map(lambda job: train(*job), plan):
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
            out.flush()
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=parse_run, nargs="+", required=True, help="HIDDENxBATCH@STEPS ...")
    parser.add_argument("--lr", type=float, nargs="+", default=[1.2e-2])
    parser.add_argument("--warmup", type=int, nargs="+", default=[100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 7])
    parser.add_argument(
        "--corpora",
        nargs="+",
        choices=["english", "builtin", "builtin-cut"],
        default=["english"],
        help="english: --corpus; builtin: charlstm's own (this Python's standard-library source); "
        "builtin-cut: the built-in one cut to --corpus's length",
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument(
        "--out", type=Path, required=True, help="JSON lines, appended to; runs already there are skipped"
    )
    add_corpus_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        corpora: dict[str, Path | None] = {}
        if "english" in args.corpora:
            english = find_corpus(args.corpus)
            corpora[describe(english)["corpus"]] = english
        if "builtin" in args.corpora:
            corpora["python-stdlib"] = None
        if "builtin-cut" in args.corpora:
            length = len(read_text(find_corpus(args.corpus)))
            cut = Path(scratch) / f"python-stdlib-first-{length}.txt"
            cut.write_text(builtin_text(length), encoding="utf-8")
            corpora[cut.stem] = cut
        rows = run_plan(corpora, args)
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["corpus"], row["run"], row["lr"], row["warmup"]), []).append(row["val_loss"])
    print(f"{'corpus':<28} {'run':<14} {'lr':>8} {'warmup':>6} {'mean':>7}  seeds", file=sys.stderr)
    for (corpus, run, lr, warmup), losses in sorted(groups.items()):
        each = " ".join(f"{loss:.4f}" for loss in losses)
        print(f"{corpus:<28} {run:<14} {lr:>8g} {warmup:>6} {statistics.mean(losses):>7.4f}  {each}", file=sys.stderr)


if __name__ == "__main__":
    main()
