"""Sizing a run for its time budget: the largest model this machine trains well in it.

With a time budget and no shape chosen, `charlstm train` times a few real training steps
of each candidate shape on the run's own data and takes the largest that still gets
BUDGET_STEPS updates in the budget (`choose_shape`). What it measured travels as a
`Sizing`, which the run prints and keeps in config.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from charlstm.config import ModelConfig, TrainConfig
from charlstm.errors import CharlstmError
from charlstm.train import Data, Trainer

# Sizes `charlstm train` may pick for a time budget, smallest first: (hidden, batch size).
BUDGET_SHAPES = ((128, 16), (192, 16), (256, 16), (256, 32), (384, 32), (512, 32))
BUDGET_STEPS = 2_000


@dataclass(frozen=True)
class Sizing:
    """The shape chosen for a budget and the measurements behind the choice.

    `steps_per_second` maps each probed shape ('128x16': hidden x batch) to its measured
    training steps per second; `seconds` is how long the probing took. Values are rounded
    to two decimals, as config.json keeps them.
    """

    hidden: int
    batch_size: int
    steps_per_second: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """config.json's `sized_for_budget`."""
        return asdict(self)


def choose_shape(steps_per_second: Callable[[int, int], float], seconds: float) -> tuple[int, int]:
    """The largest (hidden, batch) of BUDGET_SHAPES that still fits BUDGET_STEPS updates
    into `seconds`, by the measured speed of each; the smallest if none does.

    On tiny-shakespeare the best model for a budget was, on a fast and on a slow CPU alike,
    the largest that got 2,000-2,500 updates: fewer and it is undertrained, more and a
    bigger one would have done better. The bar sits at the low end because the probe is
    noisy and a shape just under it loses far more than one just over it gains: at 90 s,
    2x192 with 2,276 steps beat 2x128 with 3,703 by 0.06 (README, Measured: sizing).
    """
    chosen = BUDGET_SHAPES[0]
    for hidden, batch in BUDGET_SHAPES:
        if steps_per_second(hidden, batch) * seconds < BUDGET_STEPS:
            break
        chosen = (hidden, batch)
    return chosen


def measure_steps_per_second(trainer: Trainer, seconds: float = 0.5, warmup: int = 2) -> float:
    """Training steps per second of `trainer` (its real step on its real data), timed for
    at least `seconds` after `warmup` steps: a new shape's first steps build kernels and
    touch fresh memory, and a shorter timing swung by a third between runs here. Reading
    each loss waits for the device."""
    for _ in range(warmup):
        float(trainer.train_step())
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        float(trainer.train_step())
        steps += 1
    return steps / (time.perf_counter() - start)


def size_for_budget(
    model_config: ModelConfig,
    config: TrainConfig,
    data: Data,
    measure: Callable[[Trainer], float] = measure_steps_per_second,
) -> tuple[ModelConfig, TrainConfig, Sizing]:
    """`model_config` and `config` with the hidden size and batch chosen for `config.max_time`
    on this machine, by probing real training steps on `data` (`measure` times one shape's
    trainer; tests hand in a fixed rate)."""
    rates: dict[str, float] = {}

    def steps_per_second(hidden: int, batch: int) -> float:
        try:
            probe = Trainer(replace(model_config, hidden=hidden), replace(config, batch_size=batch), data, Path())
        except CharlstmError:  # the corpus is too short for this many streams
            return 0.0
        rates[f"{hidden}x{batch}"] = measure(probe)
        return rates[f"{hidden}x{batch}"]

    started = time.perf_counter()
    hidden, batch = choose_shape(steps_per_second, config.max_time)
    sizing = Sizing(
        hidden=hidden,
        batch_size=batch,
        steps_per_second={k: round(v, 2) for k, v in rates.items()},
        seconds=round(time.perf_counter() - started, 2),
    )
    return replace(model_config, hidden=hidden), replace(config, batch_size=batch), sizing
