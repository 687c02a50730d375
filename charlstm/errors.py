"""The one exception type a user's mistake becomes, and the one a failed write becomes.

The library raises `CharlstmError` with a message written for a person (what is wrong
and what to do); `cli.py` turns it into one line on stderr and a non-zero exit. Anything
else that escapes is a bug, and the CLI says so.

A setting's value that is malformed or out of range is a `SettingError`: one validation
(config.py) serves Python callers, who read the keyword (`length must be >= 0, got -5`),
the command line, which spells the flag (`--length ...`) and exits 2 as for any bad option,
and the server, which names the request's field.

A file that cannot be written (a full disk, a read-only or failing one, a quota) is not a
bug either: `WriteFailed` says in one line which file, why, how much it needed where that is
known, and what was kept. Every writer in charlstm raises it through `charlstm.disk`.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "input/output error (the disk or its connection failed)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is larger than this file system or the file-size limit allows",
}
"""Why a write failed, in words, by errno; other errors keep the operating system's own text."""

SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Failures where the amount needed and the space free are worth saying."""


class CharlstmError(Exception):
    """A mistake in the user's input, files or options, explained in one line."""


def named(setting: str) -> str:
    """`setting` named in a SettingError's text, left open for the reader to spell.

    The mark is a NUL on either side, which no value quoted in the text can hold (argv and
    paths cannot carry one, and the text quotes strings with repr), so a value that looks like
    a name, `--encoding '{lr}'`, is shown as typed."""
    return f"\0{setting}\0"


_NAMED = re.compile("\0([a-z_]+)\0")


class SettingError(CharlstmError):
    """A setting's value refused, worded with names left open: `named("length")` in the text
    stands for setting `length`, however the reader spells it (`spelled`). `name` is the setting
    at fault; the text starts with it unless it names it itself. `usage` is False where the value
    is one the setting takes but this machine or model cannot (`device` cuda with no GPU), which
    is no mistake in how the command was typed: the command line exits 1 then, not 2."""

    def __init__(self, name: str, problem: str, usage: bool = True):
        self.name, self.usage = name, usage
        self.template = problem if named(name) in problem else f"{named(name)} {problem}"
        super().__init__(self.spelled(str))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each setting named by `spell(name)` (a flag, a request's field)."""
        return _NAMED.sub(lambda m: spell(m.group(1)), self.template)


def reason(error: OSError) -> str:
    """Why `error` stopped a write, in words a user acts on."""
    return REASONS.get(error.errno, error.strerror or str(error) or type(error).__name__)


def size_text(n: int) -> str:
    """Bytes for a person: 97 bytes, 12.3 kB, 1.8 MB, 2.41 GB (powers of 1000, like df -H)."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


class WriteFailed(CharlstmError):
    """A file could not be written: which file, why, bytes needed and free where known, and
    what was kept ("last.pt from step 10 is intact; free space and resume with: ...").

    `kept` is filled in by whoever knows what the failure left: the writer says the previous
    file is intact, the trainer says which checkpoints are and how to resume.
    """

    def __init__(
        self,
        path: str | Path,
        why: str,
        needed: int | None = None,
        free: int | None = None,
        kept: str | None = None,
        code: int | None = None,
    ):
        self.path, self.why, self.needed, self.free, self.kept = Path(path), why, needed, free, kept
        self.code = code  # the errno, when the operating system gave one
        super().__init__(self.line())

    def line(self) -> str:
        amounts = []
        if self.needed is not None:
            amounts.append(f"needs about {size_text(self.needed)}")
        if self.free is not None:
            amounts.append(f"{size_text(self.free)} free")
        text = f"could not write {self.path}: {self.why}"
        if amounts:
            text += f" ({', '.join(amounts)})"
        return f"{text}; {self.kept}" if self.kept else text

    def keeping(self, kept: str) -> WriteFailed:
        """The same failure, saying `kept` about what is left."""
        return WriteFailed(**(self.fields() | {"kept": kept}))

    def fields(self) -> dict[str, Any]:
        """Plain values (for sending to other processes of a distributed run)."""
        return {
            "path": str(self.path),
            "why": self.why,
            "needed": self.needed,
            "free": self.free,
            "kept": self.kept,
            "code": self.code,
        }
