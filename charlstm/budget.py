"""Sizing a run for its time budget: the largest model this machine trains well in it.

With a time budget and no shape chosen, `charlstm train` times a few real training steps
of each candidate shape on the run's own data, and a few windows of its evaluation, and
takes the largest that still gets BUDGET_STEPS updates in the budget (`choose_shape`,
`steps_in_budget`). What it measured travels as a `sizing.Sizing`, which the run prints
and keeps in config.json beside what the run then achieved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import Data
from charlstm.device import bf16_candidate
from charlstm.errors import CharlstmError
from charlstm.evaluation import stream_loss
from charlstm.pacing import paced
from charlstm.sizing import PrecisionChoice, Sizing, shape_key
from charlstm.trainer import Placement, Trainer

# Sizes `charlstm train` may pick for a time budget, smallest first: (hidden, batch size).
BUDGET_SHAPES = ((128, 16), (192, 16), (256, 16), (256, 32), (384, 32), (512, 32))
BUDGET_STEPS = 2_000


def choose_shape(steps: Callable[[int, int], float]) -> tuple[int, int]:
    """The largest (hidden, batch) of BUDGET_SHAPES whose run still gets BUDGET_STEPS
    updates (`steps`: how many a shape's run will train in the budget, from its measured
    speed); the smallest if none does.

    On tiny-shakespeare the best model for a budget was, on a fast and on a slow CPU alike,
    the largest that got 2,000-2,500 updates: fewer and it is undertrained, more and a
    bigger one would have done better. The bar sits at the low end because the probe is
    noisy and a shape just under it loses far more than one just over it gains: at 90 s,
    2x192 with 2,276 steps beat 2x128 with 3,703 by 0.06 (benchmarks/README.md, "Sizing for
    the budget"). A lower bar would take 2x384/32 at ~1,750 steps for 300 s, which beat
    2x256/32 at 3,100 by 0.011 on English but lost by 0.05-0.08 on Python source, including
    source the size of the English text ("Sizing's bar, measured at fixed step counts").
    """
    chosen = BUDGET_SHAPES[0]
    for hidden, batch in BUDGET_SHAPES:
        if steps(hidden, batch) < BUDGET_STEPS:
            break
        chosen = (hidden, batch)
    return chosen


def steps_in_budget(
    seconds: float, steps_per_second: float, evaluation_seconds: float, eval_every: int, share: float | None = None
) -> float:
    """How many updates a run of `seconds` trains, as the trainer counts its evaluations:
    one every `eval_every` steps and the final one, held back from the budget; with
    `share` (a paced run, `pacing`), no more of the budget than that share, or the first and
    the final evaluation where those alone take more. The evaluations are counted because
    they are paid out of the same budget (docs/training-budget.md)."""
    if steps_per_second <= 0:
        return 0.0
    every = max(0.0, seconds - evaluation_seconds) / (1 / steps_per_second + evaluation_seconds / eval_every)
    if share is None:
        return every
    return max(every, max(0.0, seconds - max(share * seconds, 2 * evaluation_seconds)) * steps_per_second)


PROBE_WARMUP = (3, 0.3)  # steps and seconds, both, before a shape is timed
PROBE_WINDOW = (8, 1.0)  # steps and seconds, both, that it is timed for
EVALUATION_WARMUP = (1, 0.0)  # validation windows and seconds before an evaluation's window is timed
EVALUATION_WINDOW = (5, 0.3)  # validation windows and seconds, both, that it is timed for


def median_seconds(
    work: Callable[[], Any],
    warmup: tuple[int, float],
    window: tuple[int, float],
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median seconds one call of `work` takes, over at least `window` calls and
    seconds, after at least `warmup` calls and seconds (`work` waits for the device)."""
    started = clock()
    done = 0
    while done < warmup[0] or clock() - started < warmup[1]:
        work()
        done += 1
    times: list[float] = []
    began = last = clock()
    while len(times) < window[0] or last - began < window[1]:
        work()
        now = clock()
        times.append(now - last)
        last = now
    return max(statistics.median(times), 1e-9)


def measure_steps_per_second(
    trainer: Trainer,
    warmup: tuple[int, float] = PROBE_WARMUP,
    window: tuple[int, float] = PROBE_WINDOW,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Training steps per second of `trainer` (its real step on its real data): one over
    the median time of a step, over at least `window` steps and seconds, after at least
    `warmup` steps and seconds.

    A new, larger shape's first steps are slow (they grow the heap with fresh pages the
    kernel zeroes, and build oneDNN primitives for the new sizes), and the larger the shape
    the fewer steps fit in a short window, so a few slow steps, or one a neighbouring
    process interrupted, can move a mean over a handful of steps by a third (a mean over
    0.5 s after 2 steps read 256x32 at 11.2 steps/s where the run achieved 18.6). So the
    warm-up is by time as well as by steps, letting the first steps pass; the window is
    long enough to hold many steps; and the median leaves out the odd interrupted one.
    benchmarks/sizing_probe.py measures the probe's error.
    """
    return 1.0 / median_seconds(lambda: float(trainer.train_step()), warmup, window, clock)


def measure_evaluation_seconds(trainer: Trainer, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds one periodic evaluation of `trainer` will take, in its precision: the median
    time of one validation window's forward pass (timed as the training step is, for the
    same reason: one block of three windows, ~80 ms, read the same shape 0.8 s and 2.9 s on
    two runs), times the windows an evaluation scores. Checkpoints and samples, written at
    the same time, are left out: on the CPU they cost a small part of what scoring does."""
    batches = trainer.val_batches
    if batches is None:
        return 0.0

    def one_window() -> None:
        float(stream_loss(trainer.model, batches, trainer.device, trainer.precision, windows=1)[0])

    return len(batches) * median_seconds(one_window, EVALUATION_WARMUP, EVALUATION_WINDOW, clock)


def size_for_budget(
    model_config: ModelConfig,
    config: TrainConfig,
    data: Data,
    placement: Placement,
    measure: Callable[[Trainer], float] = measure_steps_per_second,
    native: Callable[[Trainer], bool] | None = None,
    measure_evaluation: Callable[[Trainer], float] = measure_evaluation_seconds,
) -> tuple[ModelConfig, TrainConfig, Sizing]:
    """`model_config` and `config` with the hidden size and batch chosen for `config.max_time`
    on this machine, by probing real training steps and evaluation windows on `data` where
    `placement` says (`measure` and `measure_evaluation` time one shape's trainer; tests
    hand in fixed figures). With `--precision auto` each shape is timed in both
    precisions where bf16 is native (`choose_precision`) and counts at its faster one: bf16's
    gain grows with the model (on one AVX-512 BF16 CPU 0.96x fp32 at 2x128, 1.63x at 2x256),
    so the first shape's verdict would not hold for the one chosen. The returned config names
    the chosen shape's precision."""
    rates: dict[str, float] = {}
    evaluations: dict[str, float] = {}
    steps: dict[str, int] = {}
    choices: dict[str, PrecisionChoice] = {}
    auto = config.precision == "auto"

    def steps_for(hidden: int, batch: int) -> float:
        key = shape_key(hidden, batch)
        try:
            shape = replace(model_config, hidden=hidden), replace(config, batch_size=batch)
            probe = Trainer(*shape, data, Path(), placement)
        except CharlstmError:  # the corpus is too short for this many streams
            return 0.0
        if auto:
            choices[key] = choose_precision(probe, measure, native)
            timed = choices[key].steps_per_second.get(choices[key].chosen)  # none where bf16 was not a candidate
            probe.precision = choices[key].chosen
            rates[key] = timed if timed is not None else measure(probe)
        else:
            rates[key] = measure(probe)
        evaluations[key] = measure_evaluation(probe)
        evaluations_share = config.eval_share if paced(config) else None
        steps[key] = int(
            steps_in_budget(config.max_time, rates[key], evaluations[key], config.eval_every, evaluations_share)
        )
        return steps[key]

    started = time.perf_counter()
    hidden, batch = choose_shape(steps_for)
    choice = choices.get(shape_key(hidden, batch))
    if choice is not None:
        config = replace(config, precision=choice.chosen)
    sizing = Sizing(
        hidden=hidden,
        batch_size=batch,
        steps_per_second={k: round(v, 2) for k, v in rates.items()},
        seconds=round(time.perf_counter() - started, 2),
        evaluation_seconds={k: round(v, 3) for k, v in evaluations.items()},
        steps=steps,
        precision=choice,
    )
    return replace(model_config, hidden=hidden), replace(config, batch_size=batch), sizing


BF16_MARGIN = 1.05
"""How much faster bf16 must measure to be chosen: a closer call is within the timing's
noise (a 1x32 LSTM measured 1.03x on one run and 0.43x on another here), and fp32 is the
more exact of the two."""


def choose_precision(
    trainer: Trainer,
    measure: Callable[[Trainer], float] = measure_steps_per_second,
    native: Callable[[Trainer], bool] | None = None,
) -> PrecisionChoice:
    """`--precision auto` for `trainer`'s device and shape: fp32 unless bf16 is native
    there and its kernels run (`device.bf16_candidate`; `native` replaces it in tests) and real steps of this
    shape measured faster in bf16. oneDNN reports bf16 on CPUs that only emulate it, and
    a CPU or GPU with native bf16 may still run a small model faster in fp32, so the
    timing decides, never the name of an instruction set alone.
    `trainer` is left in fp32 (its own precision is ignored; it is a probe)."""
    has_native = native(trainer) if native is not None else bf16_candidate(trainer.device, trainer.model.config.cell)
    if not has_native:
        return PrecisionChoice("fp32", f"no native bf16 on this {trainer.device.type}", {})
    rates = {}
    for precision in ("fp32", "bf16"):
        trainer.precision = precision
        rates[precision] = round(measure(trainer), 2)
    trainer.precision = "fp32"
    if rates["bf16"] >= BF16_MARGIN * rates["fp32"]:
        return PrecisionChoice("bf16", f"native bf16 measured {rates['bf16'] / rates['fp32']:.2f}x fp32", rates)
    ratio = rates["bf16"] / rates["fp32"]
    return PrecisionChoice("fp32", f"bf16 is native but measured {ratio:.2f}x fp32, under {BF16_MARGIN:g}x", rates)


def confirm_auto_precision(
    model_config: ModelConfig,
    config: TrainConfig,
    data: Data,
    placement: Placement,
    measure: Callable[[Trainer], float] | None = None,
    native: Callable[[Trainer], bool] | None = None,
) -> tuple[TrainConfig, PrecisionChoice | None]:
    """A run not sized for its budget, with `--precision auto`: a short A/B of its own shape
    in fp32 and bf16 where bf16 is native (`choose_precision`); `config` names the winner.
    Other precisions are the user's choice and are kept, with no choice recorded."""
    if config.precision != "auto":
        return config, None
    device = placement.device
    if native is None and not bf16_candidate(device, model_config.cell):
        return replace(config, precision="fp32"), PrecisionChoice("fp32", f"no native bf16 on this {device.type}", {})
    key = (str(device), model_config, config.batch_size, config.seq_len)
    if measure is None and native is None and key in _CONFIRMED:
        return replace(config, precision=_CONFIRMED[key].chosen), _CONFIRMED[key]
    try:
        probe = Trainer(model_config, config, data, Path(), replace(placement, precision="fp32"))
    except CharlstmError:
        return config, None  # the Trainer that follows says what is wrong with the data
    quick = measure or partial(measure_steps_per_second, warmup=(2, 0.1), window=(5, 0.3))
    choice = choose_precision(probe, quick, native)
    if measure is None and native is None:
        _CONFIRMED[key] = choice
    return replace(config, precision=choice.chosen), choice


_CONFIRMED: dict[tuple, PrecisionChoice] = {}
"""Choices already timed in this process, by device and shape: a program that starts many
runs of one shape (a sweep, the tests) times the two precisions once."""
