"""Corpora on disk -> memory-mapped token arrays, built once in two streaming passes.

A gigabyte of text never sits in memory. Pass one streams every file to learn the
vocabulary, the character count and the SHA-256 of the text (what `--resume` checks);
pass two streams it again and writes each character's id, in the smallest dtype, to a
cache file that training maps, so only the pages a batch touches are ever read. Both
results stay in the cache folder, keyed by the files' paths, sizes and modification
times, so the next run on the same corpus starts at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.corpus import Source, check_vocabulary_size, iter_text
from charlstm.disk import Sink, atomic_write
from charlstm.errors import CharlstmError
from charlstm.tokenizer import Vocabulary, describe_chars

CACHE_FORMAT = 1
CODE_POINTS = 0x110000

Progress = Callable[[str, int, int], None]
"""Called as progress(stage, bytes done, bytes in all) while a corpus is read."""

_KEPT = "the corpus is untouched; free space in the token cache, or point CHARLSTM_CACHE at a folder with room"
"""What a failed token-cache write says (`errors.WriteFailed`): the cache is only ever a copy."""


def cache_dir() -> Path:
    """$CHARLSTM_CACHE, else $XDG_CACHE_HOME/charlstm, else ~/.cache/charlstm."""
    if os.environ.get("CHARLSTM_CACHE"):
        return Path(os.environ["CHARLSTM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlstm"


@dataclass(frozen=True)
class Scan:
    """What pass one learns. `files` are those that were text, in reading order."""

    vocabulary: Vocabulary
    characters: int
    sha256: str
    files: tuple[Path, ...]
    skipped: int


@dataclass(frozen=True)
class TokenFile:
    """The tokens, what pass one learned, the cache file, and the vocabulary the ids are of."""

    tokens: torch.Tensor
    scan: Scan
    path: Path
    vocabulary: Vocabulary


def code_points(text: str) -> torch.Tensor:
    """The Unicode code points of `text` as int32, through one C-speed encode."""
    return torch.frombuffer(bytearray(text.encode("utf-32-le", "surrogatepass")), dtype=torch.int32)


def load_tokens(
    source: Source,
    vocabulary: Vocabulary | None = None,
    skip_unknown: bool = False,
    what: str = "corpus",
    progress: Progress | None = None,
    grow: bool = False,
) -> TokenFile:
    """The corpus as a memory-mapped 1-D token tensor, built and cached on first use.

    With no `vocabulary`, the corpus's own is used. With one (a model's), the text must fit
    it, or with `skip_unknown` the characters it lacks are dropped, or with `grow` they are
    appended to it (`Vocabulary.extended`; fine-tuning), and the result's `vocabulary` says so.
    """
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharlstmError(f"cannot create the token cache {folder}: {e.strerror}; set CHARLSTM_CACHE") from e
    key = _source_key(source)
    scan = _cached_scan(source, folder / f"{key}.json", progress)
    vocabulary = vocabulary or scan.vocabulary
    missing = set(scan.vocabulary.chars) - set(vocabulary.chars)
    if missing and grow:
        vocabulary, missing = vocabulary.extended(missing), set()
        check_vocabulary_size(len(vocabulary), f"the model's vocabulary grown by {what}")
    if missing and not skip_unknown:
        raise CharlstmError(f"{what} has characters the model never saw: {describe_chars(missing)}")
    variant = hashlib.sha256(f"{vocabulary.chars}\0{bool(missing)}".encode("utf-8", "surrogatepass")).hexdigest()
    path = folder / f"{key}.{scan.sha256[:16]}.{variant[:16]}.tokens"  # names the text: see _remove_stale
    if not path.exists():
        _encode(scan, source, vocabulary, path, bool(missing), progress)
    count = path.stat().st_size // vocabulary.dtype.itemsize
    if count == 0:
        raise CharlstmError(f"{what} has no characters the model knows")
    tokens = torch.from_file(str(path), shared=False, size=count, dtype=vocabulary.dtype)
    return TokenFile(tokens, scan, path, vocabulary)


def _source_key(source: Source) -> str:
    files = [str(f.resolve()) for f in source.files]
    ident = json.dumps([CACHE_FORMAT, source.encoding, source.errors, source.single, files])
    return hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _stamp(files: tuple[Path, ...]) -> list[list[int]]:
    stats = [f.stat() for f in files]
    return [[s.st_size, s.st_mtime_ns] for s in stats]


def _cached_scan(source: Source, meta: Path, progress: Progress | None) -> Scan:
    """Pass one, or its record when no file has changed size or time since."""
    try:
        stamp = _stamp(source.files)
    except OSError as e:
        raise CharlstmError(f"cannot read {e.filename}: {e.strerror}") from e
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        if record["stamp"] == stamp:
            return Scan(
                Vocabulary(record["vocabulary"]),
                record["characters"],
                record["sha256"],
                tuple(source.files[i] for i in record["files"]),
                record["skipped"],
            )
    except (OSError, ValueError, KeyError, TypeError, IndexError, CharlstmError):
        pass
    scan = _scan(source, progress)
    _remove_stale(meta, scan.sha256)
    position = {f: i for i, f in enumerate(source.files)}
    record = {
        "stamp": stamp,
        "vocabulary": scan.vocabulary.chars,
        "characters": scan.characters,
        "sha256": scan.sha256,
        "files": [position[f] for f in scan.files],
        "skipped": scan.skipped,
    }
    atomic_write(meta, json.dumps(record).encode("utf-8", "surrogatepass"), kept=_KEPT)
    return scan


def _remove_stale(meta: Path, sha256: str) -> None:
    """Delete this source's token files for text it no longer holds, never those of its
    current text: another process (a rank of the same launch, another machine on a shared
    disk, a second run) may be mapping one, or about to, and the text it encodes is the
    same. A token file's name carries the hash of the text it encodes, so this can tell."""
    current = f"{meta.stem}.{sha256[:16]}."
    for stale in meta.parent.glob(f"{meta.stem}.*.tokens"):
        if not stale.name.startswith(current):
            stale.unlink(missing_ok=True)


def _texts(source: Source, file: Path, on_read: Callable[[int], None]) -> Iterator[str]:
    """One file's text in pieces; in a folder each file ends with a newline."""
    last = ""
    for piece in iter_text(file, source.encoding, source.errors, on_read=on_read):
        if piece:
            last = piece[-1]
            yield piece
    if not last:
        raise CharlstmError(f"corpus {file} has no characters")
    if not source.single and last != "\n":
        yield "\n"


class _Meter:
    def __init__(self, stage: str, files: tuple[Path, ...], progress: Progress | None):
        self.stage, self.progress, self.done = stage, progress, 0
        self.total = sum(f.stat().st_size for f in files)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.stage, self.done, self.total)


def _scan(source: Source, progress: Progress | None) -> Scan:
    """Pass one. A file in a folder that turns out not to be text is skipped whole: its
    characters and bytes are taken back out of the vocabulary and the hash."""
    meter = _Meter("scanning", source.files, progress)
    seen = torch.zeros(CODE_POINTS, dtype=torch.bool)
    hasher = hashlib.sha256()
    characters, kept, skipped = 0, [], 0
    for file in source.files:
        file_seen, file_hasher, file_characters = torch.zeros_like(seen), hasher.copy(), 0
        try:
            for piece in _texts(source, file, meter):
                file_seen[code_points(piece)] = True
                file_hasher.update(piece.encode("utf-8", "surrogatepass"))
                file_characters += len(piece)
            check_vocabulary_size(int(file_seen.sum()), f"corpus {file}")
        except CharlstmError:
            if source.single:
                raise
            skipped += 1
            continue
        seen |= file_seen
        hasher, characters = file_hasher, characters + file_characters
        kept.append(file)
    if not kept:
        raise CharlstmError(
            f"no text files in {source.name} ({len(source.files)} files, {skipped} skipped as not text)"
        )
    check_vocabulary_size(int(seen.sum()), f"corpus {source.name}")
    chars = "".join(map(chr, seen.nonzero().flatten().tolist()))
    return Scan(Vocabulary(chars), characters, hasher.hexdigest(), tuple(kept), skipped)


def _encode(
    scan: Scan, source: Source, vocabulary: Vocabulary, path: Path, drop_unknown: bool, progress: Progress | None
) -> None:
    """Pass two: ids written piece by piece to a temporary file, renamed into place whole."""
    meter = _Meter("encoding", scan.files, progress)
    lookup = torch.full((CODE_POINTS,), -1, dtype=torch.int32)
    lookup[code_points(vocabulary.chars)] = torch.arange(len(vocabulary), dtype=torch.int32)

    def write(f: Sink) -> None:
        written = 0
        for file in scan.files:
            for piece in _texts(source, file, meter):
                codes = code_points(piece)
                written += len(codes)
                ids = lookup[codes]
                if drop_unknown:
                    ids = ids[ids >= 0]
                ids = ids.to(vocabulary.dtype)
                f.write(ctypes.string_at(ids.data_ptr(), ids.nbytes))
        if written != scan.characters:
            raise CharlstmError(f"corpus {source.name} changed while it was read; run again")

    atomic_write(path, write, needed=scan.characters * vocabulary.dtype.itemsize, kept=_KEPT)
