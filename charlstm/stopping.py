"""How a training run stops, and that it stops whole.

Ctrl-C is held while a checkpoint is written (`sigint_deferred`), so a save is never cut in
half; the trainer then saves last.pt and stops. In a distributed run Ctrl-C and torchrun's
SIGTERM only ask to stop (`stop_requests`): every rank must save its part of the state
together, so the ranks agree on a stop, and on the elapsed time a time budget is counted
in, at the steps `Agreement` schedules.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from charlstm.config import TrainConfig


@contextmanager
def stop_requests(distributed: bool, request: Callable[[], None]) -> Iterator[None]:
    """In a distributed run, Ctrl-C (and torchrun's SIGTERM) only ask to stop (`request`): the
    ranks agree on it after the step they are in and save together, since one rank cannot
    save the others' state alone. A one-process run takes KeyboardInterrupt as it comes."""
    if not distributed:
        yield
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: request()) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


AGREE_EVERY = 10
"""In a distributed run, the ranks agree on (elapsed, stop) at most this many steps apart."""


class Agreement:
    """When the ranks of a distributed run next agree on elapsed time and a stop request.

    Agreeing is a collective and two host syncs, so it is not done every step: every
    AGREE_EVERY steps, at every evaluation (so checkpoints hold agreed time), at the step
    budget, and every step once the time budget is within two agreements' worth of steps.
    Every rank computes the schedule from agreed values alone, so all ranks join each
    agreement; between agreements the learning rate reads the last agreed time, the same
    on every rank. A time budget is thus still met at the first step that passes it.
    """

    def __init__(self, step: int, elapsed: float):
        self.step, self.elapsed, self.pending = step, elapsed, 0.0
        self.next = step + 1

    def due(self, step: int, config: TrainConfig) -> bool:
        return step >= self.next or step % config.eval_every == 0 or bool(config.max_steps and step >= config.max_steps)

    def agreed(self, step: int, elapsed: float, config: TrainConfig) -> None:
        step_time = (elapsed - self.elapsed) / max(step - self.step, 1)
        gap = AGREE_EVERY
        if config.max_time and step_time > 0:
            gap = min(gap, max(1, int((config.max_time - elapsed) / step_time / 2)))
        self.step, self.elapsed, self.pending, self.next = step, elapsed, 0.0, step + gap


@contextmanager
def sigint_deferred(deliver: bool = True):
    """Hold Ctrl-C until the block ends, so a save is never cut in half.

    A Ctrl-C that arrives inside is remembered and, with `deliver`, raised as
    KeyboardInterrupt once the block is done; ignoring it would lose the user's request.
    """
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and deliver:
        raise KeyboardInterrupt
