"""Synthetic corpora with long-range dependencies, generated, never downloaded.

They exist to show what gates buy: in each task a few characters can be predicted only
by remembering something from far back, and everything else is either random (the same
for every model) or trivial. `probes` says where those characters are and what they
must be, so a benchmark can score recall directly instead of diluting it in bits/char.

    copy      K........=K      recall the key K after a gap of GAP_MIN..GAP_MAX dots
    brackets  ([{<>}]...)      close every bracket with its own kind, nested up to DEPTH
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from charlstm import disk
from charlstm.errors import CharlstmError

KEYS = "ABCDEFGH"
OPENERS, CLOSERS = "([{<", ")]}>"


@dataclass(frozen=True)
class Probe:
    """Position `index` of the text must be `expected`, knowable only from far back."""

    index: int
    expected: str


def copy_task(chars: int, seed: int = 0, gap: tuple[int, int] = (40, 80)) -> tuple[str, list[Probe]]:
    """Lines `K` + dots + `=` + `K`: the key must survive the whole gap."""
    rng = random.Random(seed)
    parts, probes, length = [], [], 0
    while length < chars:
        key = rng.choice(KEYS)
        line = key + "." * rng.randint(*gap) + "="
        probes.append(Probe(length + len(line), key))
        line += key + "\n"
        parts.append(line)
        length += len(line)
    return "".join(parts), probes


def brackets_task(chars: int, seed: int = 0, depth: int = 12) -> tuple[str, list[Probe]]:
    """Random well-nested bracket lines; every closer must match its opener's kind."""
    rng = random.Random(seed)
    parts, probes, length = [], [], 0
    while length < chars:
        stack: list[int] = []
        line = []
        while True:
            can_open = len(stack) < depth
            if stack and (not can_open or rng.random() < 0.45):
                kind = stack.pop()
                probes.append(Probe(length + len(line), CLOSERS[kind]))
                line.append(CLOSERS[kind])
                if not stack and rng.random() < 0.3:
                    break
            elif can_open:
                kind = rng.randrange(len(OPENERS))
                stack.append(kind)
                line.append(OPENERS[kind])
        line.append("\n")
        parts.append("".join(line))
        length += len(line)
    return "".join(parts), probes


TASKS = {"copy": copy_task, "brackets": brackets_task}
CHOICES = {"copy": KEYS, "brackets": CLOSERS}
"""At a probe, the characters that could stand there: recall is right when the model ranks
the expected one first among them."""


def make(task: str, chars: int, seed: int = 0) -> tuple[str, list[Probe]]:
    if task not in TASKS:
        raise CharlstmError(f"unknown synthetic task {task!r}; choose one of {', '.join(TASKS)}")
    if chars < 1:
        raise CharlstmError(f"--chars must be at least 1, got {chars}")
    return TASKS[task](chars, seed)


def write(out: Path, text: str) -> None:
    """Save a generated corpus to `out`, whole or not at all (`disk.write_user_file`: a full disk
    is one line and leaves no partial file); an existing file is never replaced."""
    if out.exists():
        raise CharlstmError(f"{out} exists; charlstm never overwrites a corpus, choose another name")
    disk.write_user_file(out, text.encode("utf-8"))
