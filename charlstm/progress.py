"""What `charlstm train` and `charlstm eval` show while they work, on stderr.

The library never prints; the CLI hands it these. On a terminal, tqdm bars (a run's
progress with loss, chars/s and time left; a corpus being read into the token cache);
when stderr is piped, one plain line per event and no escape codes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from charlstm.budget import BUDGET_STEPS
from charlstm.data import Data
from charlstm.device import describe_precision
from charlstm.model import parameter_count
from charlstm.tokenizer import describe_chars
from charlstm.trainer import Trainer, TrainListener


class TrainingPrinter(TrainListener):
    """A tqdm bar on a terminal; one plain line per evaluation when output is piped."""

    def __init__(self, interactive: bool):
        self.interactive = interactive
        self.bar = None
        self.trainer: Trainer | None = None
        self.by_steps = False
        self.last_loss = math.nan
        self.chars_per_sec = 0.0

    def started(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        c = trainer.config
        self.message(run_line(trainer))
        if trainer.data.added:
            self.message(growth_line(trainer.data))
        if trainer.sizing:
            self.message(sizing_line(trainer))
        if precision := precision_line(trainer):
            self.message(precision)
        if trainer.step:
            self.message(
                f"resumed at step {trainer.step} ({trainer.elapsed:.0f} s trained, best val "
                f"{trainer.best_val_loss:.4f}): weights, optimizer, data position, carried state and RNG restored"
            )
        self.trainer = trainer
        by_steps = bool(c.max_steps) and not c.max_time
        self.bar = tqdm(
            total=c.max_steps if by_steps else (c.max_time or None),
            initial=trainer.step if by_steps else int(trainer.elapsed),
            unit="step" if by_steps else "s",
            dynamic_ncols=True,
            disable=not self.interactive,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]"
            if c.max_time
            else None,
        )
        self.by_steps = by_steps

    def stepped(self, step: int, loss: float, chars_per_sec: float) -> None:
        self.last_loss = loss
        self.chars_per_sec = chars_per_sec
        if self.bar is not None:
            self.bar.n = step if self.by_steps else min(self.trainer.elapsed, self.bar.total or math.inf)
            self.bar.set_postfix_str(f"step {step}, loss {loss:.3f}, {chars_per_sec / 1000:.1f}k chars/s", refresh=True)

    def evaluated(self, step: int, val_loss: float | None, improved: bool) -> None:
        val = f"val {val_loss:.4f} nats ({val_loss / math.log(2):.3f} bits)/char" if val_loss is not None else "no val"
        saved = "last.pt + best.pt" if improved else "last.pt"
        self.message(
            f"step {step:>6} | train {self.last_loss:.4f} | {val} | "
            f"{self.chars_per_sec / 1000:.1f}k chars/s | saved {saved}"
        )

    def sampled(self, step: int, text: str) -> None:
        self.message(f"--- sample at step {step} ---\n{text}\n---")

    def finished(self, run_dir: Path, result: dict[str, Any]) -> None:
        """The last lines: how the run ended and how to sample it."""
        best = (
            f"best val {result['best_val_loss']:.4f} nats/char"
            if math.isfinite(result["best_val_loss"])
            else "no validation"
        )
        if "full_val_loss" in result:
            best += f"; whole validation split {result['full_val_loss']:.4f} nats/char"
        spent = f"{result['elapsed']:.0f} s"
        if round(result["evaluating"]):  # on --max-time too
            spent += f" + {result['evaluating']:.0f} s evaluating"
        self.message(f"done: {result['step']} steps in {spent}, {best}; run {run_dir}")
        self.message(f"sample it: charlstm sample --checkpoint {run_dir}")

    def message(self, text: str) -> None:
        from tqdm import tqdm

        if self.interactive:
            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_line(trainer: Trainer) -> str:
    """One line that says what is about to train, on what, where, and for how long."""
    c, m, data = trainer.config, trainer.model.config, trainer.data
    budget = []
    if c.max_steps:
        budget.append(f"{c.max_steps} steps")
    if c.max_time:
        budget.append(f"{c.max_time:g} s")
    return (
        f"run {trainer.run_dir} | {m.cell} {m.layers}x{m.hidden}, {parameter_count(trainer.model):,} parameters, "
        f"batch {c.batch_size}x{c.seq_len} | "
        f"corpus {data.name}{f' ({data.files} files)' if data.files > 1 else ''}: "
        f"{len(data.train):,} train / {len(data.val):,} val chars{validation_note(trainer)}, "
        f"vocabulary {len(data.vocabulary)} | "
        f"{trainer.device.type} {describe_precision(trainer.device, trainer.precision)} | "
        f"budget {' or '.join(budget) or 'none (Ctrl-C saves and stops)'}"
    )


def growth_line(data: Data) -> str:
    """What --init-from added to the checkpoint's vocabulary: 'vocabulary 65 -> 73: added 'é' 'ï' ...'."""
    added = describe_chars(data.added, limit=GROWTH_SHOWN, separator=" ")
    return f"vocabulary {data.grown_from} -> {len(data.vocabulary)}: added {added} (fresh rows; the old keep theirs)"


GROWTH_SHOWN = 20
"""The most added characters the growth line names; the rest are counted."""


def validation_note(trainer: Trainer) -> str:
    """' (each evaluation scores 131,072 of them)' when evaluations score part of the split."""
    scored = trainer.validation_scored()
    if scored["whole"] or not scored["characters"]:
        return ""
    end = "; all of them at the end" if scored["final"] == "whole" else "; --val-chars 0 for all"
    return f" (each evaluation scores the same {scored['characters']:,} of them{end})"


def precision_line(trainer: Trainer) -> str | None:
    """What --precision auto chose and why, when a run timed it without sizing."""
    choice = trainer.precision_choice
    if choice is None or trainer.sizing is not None:
        return None
    return f"precision auto: {choice.chosen} ({choice.reason})"


def sizing_line(trainer: Trainer) -> str:
    """What budget sizing chose and the speeds it measured."""
    c, m, sizing = trainer.config, trainer.model.config, trainer.sizing
    tried = ", ".join(f"{shape} {rate:.1f}" for shape, rate in sizing.steps_per_second.items())
    chosen = f"; precision {sizing.precision.chosen} ({sizing.precision.reason})" if sizing.precision else ""
    expected = sizing.steps.get(sizing.shape)
    expecting = f"; expect ~{expected:,} steps with evaluations" if expected is not None else ""
    which = "the largest that fits" if expected is None or expected >= BUDGET_STEPS else "the smallest; none fits"
    return (
        f"sized for the {c.max_time:g} s budget: hidden {m.hidden}, batch {c.batch_size}, {which} "
        f"{BUDGET_STEPS:,} steps here (steps/s measured in {sizing.seconds:.1f} s: "
        f"{tried}){expecting}{chosen}; --hidden or --batch-size fixes them"
    )


class CorpusProgress:
    """A tqdm bar per pass while a corpus is read into the token cache, when that takes a
    while; a `token_cache.Progress`. Use it as a context manager so the bar always closes."""

    MIN_BYTES = 16 << 20

    def __init__(self) -> None:
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if total < self.MIN_BYTES or not sys.stderr.isatty():
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{stage} corpus", unit="B", unit_scale=True, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> CorpusProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ReadingProgress:
    """A tqdm bar while `eval --dynamic` reads a long text on a terminal (it reads at batch 1, a
    few thousand characters a second); called as progress(characters done, in all)."""

    MIN_CHARACTERS = 200_000

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if total < self.MIN_CHARACTERS or not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc="adapting", unit="char", unit_scale=True, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> ReadingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
