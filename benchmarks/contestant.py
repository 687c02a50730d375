"""A benchmark contestant in a process of its own, stepping only when told.

glibc's malloc settings are per process, and so is its allocation history: a loop timed
in the same process as charlstm would inherit charlstm's `keep_freed_memory`, or the heap
its other work left behind. A child process gets what a plain PyTorch script gets.
The parent sends a step count per line; the child answers with the seconds they took.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import torch


def timed(step: Callable[[], object], n: int, device: torch.device) -> float:
    """Seconds for n calls of `step`, counting the GPU's queued work to its end."""
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def serve(step: Callable[[], object], device: torch.device) -> None:
    """The child's side: time `n` calls of `step` for each `n` read from stdin."""
    for line in sys.stdin:
        print(timed(step, int(line), device), flush=True)


class Child:
    """The parent's side: `child(n)` runs n steps in the child and returns their seconds."""

    def __init__(self, arguments: list[str]):
        self.process = subprocess.Popen(
            [sys.executable, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __call__(self, steps: int) -> float:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
