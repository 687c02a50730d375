"""How many threads a charlstm process computes with, and what to do when the cores are shared.

Two trainings side by side on two cores crawl: each process's OpenMP threads, finished with
their share of one small operation, spin (libgomp: 300,000 turns) waiting for the next, on the
very cores the other process's threads need. Making idle threads sleep at once
(OMP_WAIT_POLICY=PASSIVE) fixes the pair but makes a run that has the machine to itself about
four times slower (every small operation then waits for a wake-up), so charlstm keeps
libgomp's default and gives two answers instead (benchmarks/shared_cores.py measures them):

- `--threads N`: with `--threads 1` each, two runs on two cores do not get in each other's way;
- `busy_hint`: a run that starts while other work keeps the cores busy says so, once.

This module imports no torch, so the command line can read it before torch loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from charlstm.config import check_threads

SERVER_SPARE_CORES = 1
"""Cores `charlstm serve --threads auto` leaves to its request threads. On a 2-core Xeon a
server computing on both cores drew 1.3-1.8x slower for 1 and 4 clients than one computing on
one (its second OpenMP thread spins between operations on the core that reads and answers
requests), and no faster for 16 (benchmarks/README.md, "Where one client's time goes")."""


def others_running(samples: int = 5, interval: float = 0.01) -> float:
    """How many other threads are running on the CPU right now: the median over a few
    readings of the kernel's count of runnable threads (/proc/loadavg), less this one.
    The load average itself lags by a minute, so a run started just after another ended
    would read it as busy. Raises OSError where there is no /proc (macOS, Windows)."""
    import statistics
    import time

    counts = []
    for _ in range(samples):
        with open("/proc/loadavg") as f:
            counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        time.sleep(interval)
    return statistics.median(counts)


def choose(setting: str) -> int | None:
    """The thread count for `setting` (`--threads`): a number is taken as it is; `auto` is None,
    torch's own choice: OMP_NUM_THREADS when set, else every core this process may use.

    `auto` does not shrink when other programs are busy: the thread count decides the order
    in which floating-point sums are taken, so a run resumed with another count would not
    continue bit for bit. `busy_hint` tells the user instead.
    """
    check_threads(setting)
    return None if setting == "auto" else int(setting)


def apply(setting: str, spare: int = 0) -> int:
    """Set torch's thread count for `setting`; returns the count in use. With `auto` and no
    OMP_NUM_THREADS, `spare` of torch's cores are left to the process's other threads (at
    least one core computes)."""
    import torch

    count = choose(setting)
    if count is None and spare and "OMP_NUM_THREADS" not in os.environ:
        count = max(1, torch.get_num_threads() - spare)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()


def busy_hint(threads_in_use: int, *, command: str = "train", load: Callable[[], float] | None = None) -> str | None:
    """One line of advice when other work already keeps the cores busy as a multi-threaded
    `charlstm command` starts; None when the machine looks free (or the load cannot be read).
    (Seen once: an eval of 4,000 characters took 23.6 s on 2 threads beside a busy test run, 0.1 s
    on one.)"""
    if threads_in_use < 2:
        return None
    try:
        busy = (load or others_running)()
    except OSError:
        return None
    if busy < 1:
        return None
    return (
        f"other work keeps the CPU busy ({busy:g} other threads running) and charlstm {command} computes with "
        f"{threads_in_use} threads: beside other work --threads 1 runs faster (two trainings: --threads 1 each)"
    )
