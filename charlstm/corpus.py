"""Text in, token batches out.

Reading is strict by default and every failure names the file and the fix, because a
corpus problem found after an hour of training costs the hour. Batches are addressed by
step number alone (no iterator state), so the data position of a run is just its step
and resuming is exact by construction.
"""

from __future__ import annotations

import codecs
import glob
import math
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.config import check_val_frac
from charlstm.errors import CharlstmError, SettingError, named

DEFAULT_CORPUS_BYTES = 4_000_000
MAX_VOCABULARY = 5_000


def iter_text(
    path: str | Path,
    encoding: str = "utf-8",
    errors: str = "strict",
    what: str = "corpus",
    chunk_bytes: int = 1 << 22,
    on_read: Callable[[int], None] | None = None,
    settable: bool = True,
) -> Iterator[str]:
    """The text of a file in pieces, with a BOM dropped and CRLF line ends made LF.

    Reading in pieces keeps a gigabyte corpus out of memory; a CR that ends one piece
    is held back until the next shows whether an LF follows it. `what` names the file
    in errors; `on_read` hears how many bytes each piece took. Text that does not decode is
    refused with the fix: another `encoding` where the reader takes one (`settable`), else
    saving the file in this one (a prime file, whose command has no such option).
    """
    path = Path(path)
    try:
        codecs.lookup_error(errors)
    except LookupError as e:
        raise SettingError("errors", f"must be strict, replace or ignore, got {errors!r}") from e
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
    except LookupError as e:
        raise SettingError("encoding", f"names no encoding this Python knows: {encoding!r}") from e
    if not path.exists():
        raise CharlstmError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CharlstmError(f"{what} {path} is a directory; give a text file")
    wide = encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))
    try:
        with open(path, "rb") as f:
            offset, pending, at_start = 0, "", True
            while raw := f.read(chunk_bytes):
                if offset == 0 and b"\x00" in raw[:1_000_000] and not wide:
                    raise CharlstmError(f"{what} {path} looks binary (it has NUL bytes); give a text file")
                try:
                    text = pending + decoder.decode(raw)
                except UnicodeDecodeError as e:
                    problem = f"{what} {path} is not valid {encoding} (byte {offset + e.start})"
                    if not settable:
                        raise CharlstmError(f"{problem}; save it as {encoding}") from e
                    raise SettingError("encoding", f"{problem}; pass {named('encoding')} (e.g. latin-1)", False) from e
                if at_start and text:
                    text, at_start = text.removeprefix("\ufeff"), False
                pending, offset = "", offset + len(raw)
                if on_read is not None:
                    on_read(len(raw))
                if text.endswith("\r"):
                    text, pending = text[:-1], "\r"
                yield text.replace("\r\n", "\n")
            if offset == 0:
                raise CharlstmError(f"{what} {path} is empty")
            try:
                tail = pending + decoder.decode(b"", final=True)
            except UnicodeDecodeError as e:
                raise CharlstmError(f"{what} {path} ends inside a {encoding} character; it may be truncated") from e
            if tail:
                yield tail
    except OSError as e:
        raise CharlstmError(f"cannot read {what} {path}: {e.strerror}") from e


def read_text(path: str | Path, *, what: str = "corpus") -> str:
    """The whole text of a small UTF-8 file (a prime, a passage to inspect); see `iter_text`."""
    text = "".join(iter_text(path, what=what, settable=False))
    check_text(text, f"{what} {Path(path)}")
    return text


@dataclass(frozen=True)
class Source:
    """The files a corpus is made of, in order. `single` files must be text; in a folder or
    a glob, files that are not are skipped (a code base has images in it)."""

    name: str
    files: tuple[Path, ...]
    single: bool
    encoding: str = "utf-8"
    errors: str = "strict"


def find_source(spec: str | Path | None, encoding: str = "utf-8", errors: str = "strict") -> Source:
    """A corpus from a text file, a folder (every file under it, sorted, hidden ones left
    out), a glob, or with no spec the default corpus."""
    if spec is None:
        return Source("python-stdlib", default_corpus_files(), single=False)
    path = Path(spec)
    if path.is_file() or not (path.is_dir() or any(ch in str(spec) for ch in "*?[")):
        if not path.exists():
            raise CharlstmError(f"corpus {path} does not exist")
        return Source(path.stem, (path,), True, encoding, errors)
    if path.is_dir():
        files = sorted(
            f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
        )
        name = path.resolve().name
    else:
        files = sorted(Path(f) for f in glob.glob(str(spec), recursive=True) if Path(f).is_file())
        name = "glob"
    if not files:
        raise CharlstmError(f"no text files in {spec}")
    return Source(name, tuple(files), False, encoding, errors)


def check_text(text: str, name: str) -> None:
    """Refuse text that cannot be a character-level corpus."""
    if not text:
        raise CharlstmError(f"{name} has no characters")
    check_vocabulary_size(len(set(text)), name)


def check_vocabulary_size(size: int, name: str) -> None:
    if size > MAX_VOCABULARY:
        raise CharlstmError(
            f"{name} has {size} distinct characters (more than {MAX_VOCABULARY}); it looks binary or mixes many scripts"
        )


def default_corpus_files() -> tuple[Path, ...]:
    """A few MB of Python source from this interpreter's own standard library.

    Every Python installation has it, so `charlstm train` works with no download and the
    project ships no text it did not write. Files are taken in sorted order until the
    budget is met, so the corpus is the same on every run of the same Python.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    size = 0
    for file in sorted(stdlib.glob("*.py")):
        files.append(file)
        size += file.stat().st_size
        if size >= DEFAULT_CORPUS_BYTES:
            break
    if not files:
        raise CharlstmError(f"this Python has no standard-library source under {stdlib}; give a corpus file")
    return tuple(files)


def split(tokens: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training head and validation tail: contiguous, so no text leaks across the cut."""
    check_val_frac(val_frac)
    n_val = int(len(tokens) * val_frac)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    carry_state: bool


class StreamBatches:
    """`streams` contiguous streams read side by side, `seq_len` characters a step.

    This is char-rnn's truncated BPTT: row b of step k continues row b of step k-1, so the
    hidden state carried between steps is real context. After the last window of an
    epoch the streams start again and the carried state must be dropped.
    """

    def __init__(
        self, tokens: torch.Tensor, streams: int, seq_len: int, what: str = "training split", cover_all: bool = False
    ):
        length = (len(tokens) - 1) // streams
        self.windows = length // seq_len
        if cover_all and length >= 1:
            self.windows = math.ceil(length / seq_len)
        if self.windows < 1:
            raise CharlstmError(
                f"the {what} ({len(tokens)} characters) is shorter than {streams} streams of "
                f"{seq_len + 1} characters; use a longer corpus or smaller --batch-size/--seq-len"
            )
        self.seq_len = seq_len
        used = streams * length
        self.inputs = tokens[:used].view(streams, length)
        self.targets = tokens[1 : used + 1].view(streams, length)

    def __len__(self) -> int:
        return self.windows

    def batch(self, step: int) -> Batch:
        window = step % self.windows
        cols = slice(window * self.seq_len, (window + 1) * self.seq_len)
        return Batch(self.inputs[:, cols], self.targets[:, cols], carry_state=window != 0)


class RandomBatches:
    """Independent random chunks each step, with a fresh zero state.

    The chunk offsets of step k come from a generator seeded by (seed, k), so any step's
    batch can be rebuilt without replaying the ones before it.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, seed: int):
        if len(tokens) < seq_len + 2:
            raise CharlstmError(
                f"the training split ({len(tokens)} characters) is shorter than one sequence "
                f"of {seq_len + 1}; use a longer corpus or a smaller --seq-len"
            )
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed

    def batch(self, step: int) -> Batch:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(len(self.tokens) - self.seq_len - 1, (self.batch_size,), generator=generator)
        index = starts[:, None] + torch.arange(self.seq_len + 1)
        chunks = self.tokens[index]
        return Batch(chunks[:, :-1], chunks[:, 1:], carry_state=False)


def validation_streams(tokens: torch.Tensor, max_streams: int, seq_len: int) -> StreamBatches:
    """Streams over the whole split, as many as it can fill; the last window may be short,
    so at most `streams - 1` characters go unscored."""
    streams = max(1, min(max_streams, (len(tokens) - 1) // seq_len))
    return StreamBatches(tokens, streams, seq_len, what="validation split (raise --val-frac)", cover_all=True)
