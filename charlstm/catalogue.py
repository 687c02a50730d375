"""Standard corpora by name: where they live, how big they are, and their SHA-256.

The project ships no external text, only `corpora/catalogue.json`, which says where a
user can fetch each corpus. `fetch` checks every byte against the catalogue's checksum
before a file takes its final name, so a corpus on disk under a catalogue name is the
one every published number was measured on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from charlstm import disk
from charlstm.errors import CharlstmError, reason

Progress = Callable[[int, int], None]
"""Called as progress(bytes done, bytes in all) while a corpus downloads."""

CHUNK = 1 << 20

DEFAULT_FOLDER = Path(".")
"""Where `charlstm corpus get` writes a corpus when no --to is given: the current folder."""


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    url: str
    bytes: int
    sha256: str
    file: str
    licence: str
    train: str
    member: str | None = None
    member_bytes: int | None = None
    member_sha256: str | None = None

    @property
    def final_sha256(self) -> str:
        """The checksum of the file the user ends up with (the member, for an archive)."""
        return self.member_sha256 or self.sha256


REQUIRED = tuple(f.name for f in fields(Entry) if f.default is MISSING and f.name != "name")
"""The fields every entry of a catalogue has."""


def catalogue_path() -> Path:
    """$CHARLSTM_CATALOGUE (a mirror's), else corpora/catalogue.json: inside the package
    once installed, beside it in a source checkout."""
    if os.environ.get("CHARLSTM_CATALOGUE"):
        return Path(os.environ["CHARLSTM_CATALOGUE"])
    here = Path(__file__).resolve().parent
    installed = here / "corpora" / "catalogue.json"
    return installed if installed.exists() else here.parent / "corpora" / "catalogue.json"


def load_catalogue() -> dict[str, Entry]:
    path = catalogue_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CharlstmError(f"cannot read the corpus catalogue {path}: {e.strerror}") from e
    except ValueError as e:
        raise CharlstmError(f"the corpus catalogue {path} is not JSON: {e}") from e
    if not isinstance(raw, dict) or not all(isinstance(entry, dict) for entry in raw.values()):
        raise CharlstmError(
            f"the corpus catalogue {path} is not a JSON object of corpora by name, each an object with "
            f"{', '.join(REQUIRED)} (as corpora/catalogue.json is)"
        )
    known = {f.name for f in fields(Entry)} - {"name"}
    for name, entry in raw.items():
        missing, unknown = [f for f in REQUIRED if f not in entry], sorted(set(entry) - known)
        if missing or unknown:
            wrong = f"lacks {', '.join(missing)}" if missing else f"has fields no entry has: {', '.join(unknown)}"
            raise CharlstmError(f"the corpus catalogue {path}: entry {name!r} {wrong}")
    return {name: Entry(name=name, **entry) for name, entry in raw.items()}


def entry(name: str) -> Entry:
    catalogue = load_catalogue()
    if name not in catalogue:
        raise CharlstmError(f"no corpus named {name!r}; known: {', '.join(sorted(catalogue))}")
    return catalogue[name]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def find_fetched(name: str, folders: Iterable[Path] = (DEFAULT_FOLDER,)) -> Path | None:
    """The copy of catalogue corpus `name` that `charlstm corpus get` left in one of `folders`
    (by default where it writes without --to), or None. A file of that name counts only if its
    size and SHA-256 are the catalogue's, so what is found is the corpus numbers are published on.
    """
    item = entry(name)
    size = item.member_bytes or item.bytes
    for folder in folders:
        path = Path(folder) / item.file
        if path.is_file() and path.stat().st_size == size and file_sha256(path) == item.final_sha256:
            return path
    return None


def fetch(item: Entry, folder: Path, progress: Progress | None = None) -> tuple[Path, bool]:
    """Download `item` into `folder`, verified; returns (path, whether it was downloaded).

    A file already there with the right checksum is kept; one with another is never
    overwritten. The download goes to a hidden partial file that is removed on any failure;
    one that cannot be written is `WriteFailed`, worded as every other write.
    """
    target = folder / item.file
    if target.exists():
        if file_sha256(target) == item.final_sha256:
            return target, False
        raise CharlstmError(f"{target} exists and is not the catalogue's {item.name}; move it or choose --to")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharlstmError(f"cannot create {folder}: {reason(e)}") from e
    part = folder / f".{item.file}.download"
    try:
        _download(item, part, progress)
        if item.member is None:
            os.replace(part, target)
        else:
            _extract(item, part, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)  # before free space is measured
        needed = item.bytes + (item.member_bytes or 0)  # a zip and its member are on disk at once
        raise disk.failed(target, e, needed, f"no partial {target.name} was left") from e
    finally:
        part.unlink(missing_ok=True)
    return target, True


def _download(item: Entry, part: Path, progress: Progress | None) -> None:
    digest, done = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(item.url, timeout=60) as response, _writing(part) as out:
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, item.bytes)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise CharlstmError(f"cannot download {item.url}: {reason}") from e
    if done != item.bytes or digest.hexdigest() != item.sha256:
        raise CharlstmError(
            f"{item.url} sent {done:,} bytes with SHA-256 {digest.hexdigest()[:16]}..., not the catalogue's "
            f"{item.bytes:,} bytes and {item.sha256[:16]}...; nothing was kept"
        )


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[disk.Sink]:
    """`path` opened for writing, its bytes through `disk`'s writer: the operating system's
    error reaches the caller as it is, and tests fail it as a disk would."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        yield disk.Sink(fd)
        os.fsync(fd)
    finally:
        os.close(fd)


def _extract(item: Entry, archive: Path, target: Path) -> None:
    """The archive's one member we want, checked, then moved into place."""
    part = target.with_name(f".{target.name}.extract")
    try:
        with zipfile.ZipFile(archive) as z, z.open(item.member) as source, _writing(part) as out:
            shutil.copyfileobj(source, out, CHUNK)
        if file_sha256(part) != item.member_sha256:
            raise CharlstmError(f"{item.member} in {item.url} does not match the catalogue's SHA-256; nothing was kept")
        os.replace(part, target)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CharlstmError(f"{item.url} is not a zip archive holding {item.member}: {e}") from e
    finally:
        part.unlink(missing_ok=True)
