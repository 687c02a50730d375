"""Writing files so that a failure damages nothing and says so in one line.

Every file charlstm keeps goes through here: checkpoints, config.json, status.json and the
token cache are replaced whole (`atomic_write`), and so are the files made for people,
exports, pages, gate traces and generated corpora (`write_user_file`, which gives them the
mode any new file of the user's gets); logs such as metrics.jsonl grow one whole line at a
time (`append_line`). Either way a failed write (a
full disk, a read-only or failing one, a quota) raises `errors.WriteFailed`: which file,
why, how much it needed, what was kept. No torch here, so torch-free commands can write.

Every byte goes through `os.write` on a file descriptor, never a buffered file object: the
operating system's own error (its errno) is kept even when a writer in between, such as
PyTorch's zip writer, replaces it with an error of its own ("unexpected pos ...").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlstm.errors import SPACE_ERRORS, CharlstmError, WriteFailed, reason

_write_fd = os.write
"""The one place bytes reach the operating system (tests put a failing disk here)."""

USER_FILE_MODE = 0o666
"""What a file made for a person asks of the umask, as other tools' new files do (0644 under umask 022)."""


class Sink:
    """The temporary file, as a writer sees it: `write` (all of it, or an OSError), `seek`,
    `tell`, `flush`. The first OSError is kept in `error`, whatever the writer raises after."""

    def __init__(self, fd: int):
        self.fd = fd
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while len(view):
                view = view[_write_fd(self.fd, view) :]
        except OSError as e:
            self.error = self.error or e
            raise
        return total

    def flush(self) -> None: ...

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd


def failed(path: Path, error: OSError, needed: int | None = None, kept: str | None = None) -> WriteFailed:
    """The one-line failure for `error` while writing `path`; free space is measured when it
    is what ran out (after the caller removed its temporary file)."""
    free = free_space(path.parent) if error.errno in SPACE_ERRORS else None
    return WriteFailed(path, reason(error), needed, free, kept, error.errno)


def free_space(folder: Path) -> int | None:
    """Bytes free to this user in `folder` (or the nearest folder above it that exists)."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def atomic_write(
    path: Path,
    content: bytes | Callable[[Sink], None],
    needed: int | None = None,
    kept: str | None = None,
) -> None:
    """Write `content` (bytes, or a function that writes into a `Sink`) to `path` so that
    `path` is always either the old file or the whole new one.

    The new content goes to a temporary file in the same folder (one file system, so the
    rename is atomic), is fsynced, then `os.replace`s `path`; the folder is fsynced so the
    rename itself survives a power cut. On any failure the temporary file is removed and
    `path` is untouched. A failed write raises `WriteFailed` saying `kept` (by default that
    the previous file is intact, or that none was left); `needed` is the size when known
    beforehand (bytes content knows its own). Errors of the content function that are not
    writes (reading a corpus, a changed file) pass through as they are. The file is the
    owner's alone (the temporary file's 0600): run folders and caches are the program's.
    """
    _replace(path, content, needed, kept, mode=None)


def write_user_file(
    path: Path, content: bytes | Callable[[Sink], None], needed: int | None = None, kept: str | None = None
) -> None:
    """Write a file made for a person (an export, a report or inspect-gates page, a trace, a
    generated corpus) as `atomic_write` does, with the mode any new file of theirs gets:
    USER_FILE_MODE less the umask, as `open` or a shell redirect would make it. Such files are
    handed on or served, so they are not kept owner-only like the temporary file they start as.
    """
    _replace(path, content, needed, kept, mode=USER_FILE_MODE)


def check_writable_path(path: Path) -> None:
    """Refuse a path no file can be written at (its folder missing, or a folder itself), before
    the work that makes the file is done."""
    if path.is_dir():
        raise CharlstmError(f"cannot write {path}: it is a folder; name a file")
    if not path.parent.is_dir():
        raise CharlstmError(f"cannot write {path}: there is no folder {path.parent}")


def _replace(
    path: Path, content: bytes | Callable[[Sink], None], needed: int | None, kept: str | None, mode: int | None
) -> None:
    """`atomic_write`'s work; `mode` (less the umask) replaces the temporary file's 0600 when given."""
    path = Path(path)
    if path.is_dir():  # replacing it would fail only after the work: say so before
        raise failed(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), needed, "nothing was written")
    if isinstance(content, bytes | bytearray | memoryview):
        needed = len(content) if needed is None else needed
    if kept is None:
        kept = f"the previous {path.name} is intact" if path.exists() else f"no partial {path.name} was left"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise failed(path, e, needed, kept) from e
    sink = Sink(fd)
    writing = True  # False while the content function runs: only the sink's errors are writes there
    try:
        if mode is not None:
            os.fchmod(fd, mode & ~_umask())
        if callable(content):
            writing = False
            content(sink)
            writing = True
        else:
            sink.write(content)
        os.fsync(fd)
        fd, closing = -1, fd
        os.close(closing)  # an error closing is a write error: NFS reports a full disk there
        os.replace(tmp_name, path)
    except BaseException as e:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(e, WriteFailed):
            raise e.keeping(e.kept or kept) from e
        error = sink.error or (e if writing and isinstance(e, OSError) else None)
        if error is None:
            raise
        raise failed(path, error, needed, kept) from e
    _fsync_directory(path.parent)


def append_line(path: Path, line: str, kept: str | None = None) -> None:
    """Append `line` and a newline to `path` (created if missing) so the file never ends in
    half a line: the record goes out in one write, and if the disk takes only part of it,
    the file is cut back to where it was. A file that already ends in a cut line (a process
    killed mid-write) gets a newline first, so only that line is lost, never this one."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    kept = kept or f"{path.name} keeps its earlier lines whole"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise failed(path, e, len(data), kept) from e
    size = None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        Sink(fd).write(data)
    except OSError as e:
        if size is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        raise failed(path, e, len(data), kept) from e
    finally:
        os.close(fd)


def write_json(path: Path, value: dict[str, Any], kept: str | None = None) -> None:
    """A readable JSON file (config.json), written whole or not at all (`WriteFailed` says `kept`)."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode(), kept=kept)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written files (checkpoints, status.json, config.json: every `disk.atomic_write`
    temporary) left by a writer that was killed mid-save.

    Only one trainer writes a run folder, so when a run resumes, every temporary file in
    it belongs to a dead process; left alone, each kill would leave one behind.
    """
    for stale in run_dir.glob(".*.*.tmp"):
        stale.unlink(missing_ok=True)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
