"""How many threads a charlstm process computes with, and how its idle threads wait.

Two trainings side by side on two cores used to crawl: a 2x32 run of 30 steps that took
under a second alone took 32 s beside another. Each process's OpenMP threads, finished
with their share of one small operation, spin (libgomp: 300,000 turns) waiting for the
next, on the very cores the other process's threads need. Two things fix it, measured by
benchmarks/shared_cores.py:

- idle threads sleep at once instead of spinning (`openmp_defaults`: OMP_WAIT_POLICY=PASSIVE,
  set before torch loads, because libgomp reads its environment once, when it is loaded);
- `--threads auto` takes only the cores no other program is running on at start.

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


def busy_cores() -> int:
    """Runnable threads of other programs right now (Linux: /proc/loadavg's running count,
    less this process's one), the least of a few looks; elsewhere the 1-minute load average.

    The instantaneous count, not the load average: the average lags a minute, so a run
    started just after another finished would think the cores still busy.
    """
    try:
        looks = []
        for _ in range(3):
            with open("/proc/loadavg") as f:
                looks.append(int(f.read().split()[3].split("/")[0]) - 1)
        return max(0, min(looks))
    except (OSError, ValueError, IndexError):
        try:
            return int(os.getloadavg()[0])
        except (OSError, AttributeError):
            return 0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def choose(
    setting: str, environ: MutableMapping[str, str] = os.environ, cores=usable_cores, busy=busy_cores
) -> int | None:
    """The thread count for `setting` (`--threads`): a number is taken as it is; `auto` is
    OMP_NUM_THREADS when set (None: torch has read it already), else the cores no other
    program is running on, at least one."""
    check_threads(setting)
    if setting != "auto":
        return int(setting)
    if environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, cores() - busy())


def apply(setting: str) -> int:
    """Set torch's thread count for `setting`; returns the count in use."""
    import torch

    count = choose(setting)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
