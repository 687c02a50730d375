"""How well the budget probe predicts the steps/s a run then achieves.

For each shape (hidden x batch, two layers): the probe as budget sizing runs it
(budget.measure_steps_per_second on a fresh trainer), the probe as it was before (the mean
over 0.5 s after 2 steps), then a real run of that shape for `--train-seconds` (charlstm's
trainer, evaluations included as in a real run) and the steps/s it achieved in training
time. The shapes are probed in order, smallest first, in one process, as sizing does.
With `--budgets`, also the whole flow: size_for_budget for each budget, then a run of the
chosen shape for that budget (samples and evaluations as `charlstm train` makes them):
steps/s and the steps the budget holds, predicted against achieved.

With `--wander SECONDS`, how steady the thing predicted is: each shape trained for SECONDS in
one process, its steps/s in every 5 s, beside a plain 1024x1024 matmul loop timed the same
way (the machine's own compute): a rate that wanders while the matmul's holds is the step's,
not the clock's.

Prints one JSON line per shape or budget (error = predicted / achieved - 1), then a table.

    python benchmarks/sizing_probe.py --precision fp32                      # 4 shapes, 60 s each
    python benchmarks/sizing_probe.py --precision auto --shapes --budgets 90 300
    python benchmarks/sizing_probe.py --precision fp32 --shapes 128x16 256x32 --wander 60
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from corpus_arg import add_corpus_argument, describe, find_corpus

from charlstm import budget
from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import load_data
from charlstm.device import keep_freed_memory
from charlstm.runs import place
from charlstm.trainer import Trainer


def old_probe(trainer: Trainer, seconds: float = 0.5, warmup: int = 2) -> float:
    """The probe before it was fixed: the mean over at least 0.5 s (and 3 steps) after 2 steps."""
    for _ in range(warmup):
        float(trainer.train_step())
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        float(trainer.train_step())
        steps += 1
    return steps / (time.perf_counter() - start)


def achieved(model: ModelConfig, config: TrainConfig, data, seconds: float, root: Path) -> Trainer:
    """A real run of `seconds`, done: its steps/s of training time and its steps."""
    run = replace(config, max_time=seconds, max_steps=0)
    trainer = Trainer(model, run, data, root / f"h{model.hidden}-b{config.batch_size}-{time.time_ns()}", place(run))
    trainer.run_dir.mkdir(parents=True)
    trainer.run()
    return trainer


def every_five_seconds(work, seconds: float) -> list[float]:
    """Calls of `work` per second in each 5 s of `seconds`."""
    rates, began = [], time.perf_counter()
    mark, done = began, 0
    while time.perf_counter() - began < seconds:
        work()
        done += 1
        now = time.perf_counter()
        if now - mark >= 5:
            rates.append(round(done / (now - mark), 2))
            mark, done = now, 0
    return rates


def wander(model: ModelConfig, config: TrainConfig, data, seconds: float) -> dict:
    """One shape's steps/s per 5 s over `seconds`, then a matmul loop's, for comparison."""
    import torch

    trainer = Trainer(model, config, data, Path(), place(config))
    steps = every_five_seconds(lambda: float(trainer.train_step()), seconds)
    a = torch.randn(1024, 1024)
    products = every_five_seconds(lambda: float((a @ a)[0, 0]), seconds)

    def spread(rates: list[float]) -> float:
        return round(max(rates) / min(rates) - 1, 3)

    return {"steps_per_second": steps, "steps_spread": spread(steps)} | {
        "matmuls": products,
        "matmul_spread": spread(products),
    }


def row(kind: str, shape: str, predicted: float, got: float, **extra) -> dict:
    return (
        {"kind": kind, "shape": shape, "predicted": round(predicted, 2), "achieved": got}
        | extra
        | {"error": round(predicted / got - 1, 3)}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_argument(parser)
    parser.add_argument("--shapes", nargs="*", default=["128x16", "256x16", "256x32", "384x32"], help="HIDDENxBATCH")
    parser.add_argument("--train-seconds", type=float, default=60.0, help="length of each shape's run")
    parser.add_argument("--budgets", nargs="*", type=float, default=[], help="also size and run for these budgets")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--wander", type=float, default=0, help="instead: each shape's steps/s per 5 s over this long")
    args = parser.parse_args()
    if 0 < args.wander < 5:
        parser.error("--wander reports steps/s per 5 s: give at least 5 seconds")
    if args.wander and args.budgets:
        parser.error("--wander measures shapes alone: leave out --budgets")
    keep_freed_memory()  # as charlstm train does
    corpus = find_corpus(args.corpus)
    base = TrainConfig(corpus=str(corpus), precision=args.precision, device=args.device)
    data = load_data(base)
    facts = describe(corpus) | {"precision": args.precision}
    rows = []
    with tempfile.TemporaryDirectory(prefix="sizing-probe-") as folder:
        root = Path(folder)
        for shape in args.shapes:
            hidden, batch = map(int, shape.split("x"))
            model = ModelConfig(vocab_size=len(data.vocabulary), layers=args.layers, hidden=hidden)
            config = replace(base, batch_size=batch)
            if args.wander:
                print(json.dumps(facts | {"kind": "wander", "shape": shape} | wander(model, config, data, args.wander)))
                continue
            new = budget.measure_steps_per_second(Trainer(model, config, data, Path(), place(config)))
            old = old_probe(Trainer(model, config, data, Path(), place(config)))
            got = achieved(model, replace(config, sample_every=0), data, args.train_seconds, root).steps_per_second()
            rows.append(
                facts | row("shape", shape, new, got, old_predicted=round(old, 2), old_error=round(old / got - 1, 3))
            )
            print(json.dumps(rows[-1]), flush=True)
        for seconds in args.budgets:
            model = ModelConfig(vocab_size=len(data.vocabulary), layers=args.layers)
            timed = replace(base, max_time=seconds)
            sized_model, sized_config, sizing = budget.size_for_budget(model, timed, data, place(timed))
            run = achieved(sized_model, sized_config, data, seconds, root)
            shape = sizing.shape
            steps = {"predicted_steps": sizing.steps[shape], "achieved_steps": run.step}
            steps["steps_error"] = round(steps["predicted_steps"] / run.step - 1, 3)
            rows.append(
                facts
                | row("budget", shape, sizing.predicted(), run.steps_per_second(), budget_s=seconds)
                | steps
                | {"probed": sizing.steps_per_second, "evaluation_seconds": sizing.evaluation_seconds[shape]}
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'kind':<7} {'shape':<8} {'predicted':>9} {'achieved':>9} {'error':>7} {'old / steps':>16} {'error':>8}",
        file=sys.stderr,
    )
    for r in rows:
        kind = r["kind"] if r["kind"] == "shape" else f"{r['budget_s']:g} s"
        if "old_predicted" in r:
            old = f"{r['old_predicted']:>16.2f} {r['old_error']:>+8.1%}"
        else:
            old = f"{r['predicted_steps']:>7,} {r['achieved_steps']:>8,} {r['steps_error']:>+8.1%}"
        print(
            f"{kind:<7} {r['shape']:<8} {r['predicted']:>9.2f} {r['achieved']:>9.2f} {r['error']:>+7.1%} {old}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
