"""How many threads a charlstm process computes with, and how its idle threads wait.

Two trainings side by side on two cores used to crawl: a 2x32 run of 30 steps that took
under a second alone took 32 s beside another. Each process's OpenMP threads, finished
with their share of one small operation, spin (libgomp: 300,000 turns) waiting for the
next, on the very cores the other process's threads need. Two settings answer it, measured by
benchmarks/shared_cores.py:

- idle threads sleep at once instead of spinning (`openmp_defaults`: OMP_WAIT_POLICY=PASSIVE,
  set before torch loads, because libgomp reads its environment once, when it is loaded);
- `--threads N` for whoever wants fewer threads than cores (`auto`: torch's choice).

This module imports no torch: `openmp_defaults` must run before torch is first imported.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from charlstm.config import check_threads

WAIT_POLICY = "PASSIVE"
"""OMP_WAIT_POLICY charlstm sets where the user chose none. On 2 cores shared with other
work, 30 steps of a 2x32 model took 0.27-0.94 s passive against 4-17 s with libgomp's
default spin and 1-7 s with GOMP_SPINCOUNT=10000; two such runs at once 0.6 s against
9-19 s and 8-13 s (benchmarks/shared_cores.py, rounds interleaved)."""


def openmp_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Idle OpenMP threads sleep at once, unless the user chose a wait policy (OMP_WAIT_POLICY,
    GOMP_SPINCOUNT). Only effective before torch is imported in this process (the command
    line calls it first)."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["OMP_WAIT_POLICY"] = WAIT_POLICY


def choose(setting: str) -> int | None:
    """The thread count for `setting` (`--threads`): a number is taken as it is; `auto` is None,
    torch's own choice: OMP_NUM_THREADS when set, else every core this process may use.

    `auto` does not shrink when other programs are busy: the thread count decides the order
    in which floating-point sums are taken, so a run resumed with another count would not
    continue bit for bit, and the passive wait policy already lets runs share cores fairly.
    """
    check_threads(setting)
    return None if setting == "auto" else int(setting)


def apply(setting: str) -> int:
    """Set torch's thread count for `setting`; returns the count in use."""
    import torch

    count = choose(setting)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
