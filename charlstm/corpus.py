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
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.errors import CharlstmError

DEFAULT_CORPUS_CHARS = 4_000_000
MAX_VOCABULARY = 5_000


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", what: str = "corpus") -> str:
    """The text of a file (a corpus, a prime, a passage to inspect), with a BOM dropped and
    CRLF line ends made LF; `what` names it in errors."""
    path = Path(path)
    try:
        codecs.lookup_error(errors)
    except LookupError as e:
        raise CharlstmError(f"unknown --errors {errors!r}; use strict, replace or ignore") from e
    if not path.exists():
        raise CharlstmError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CharlstmError(f"{what} {path} is a directory; give a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CharlstmError(f"cannot read {what} {path}: {e.strerror}") from e
    if not raw:
        raise CharlstmError(f"{what} {path} is empty")
    if b"\x00" in raw[:1_000_000] and not encoding.lower().replace("-", "").startswith("utf16"):
        raise CharlstmError(f"{what} {path} looks binary (it has NUL bytes); give a text file")
    try:
        text = raw.decode(encoding, errors)
    except LookupError as e:
        raise CharlstmError(f"unknown encoding {encoding!r}") from e
    except UnicodeDecodeError as e:
        raise CharlstmError(
            f"{what} {path} is not valid {encoding} (byte {e.start}); "
            "pass --encoding (e.g. latin-1) or --errors replace"
        ) from e
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    check_text(text, f"{what} {path}")
    return text


@dataclass(frozen=True)
class Corpus:
    text: str
    name: str
    files: int
    skipped: int


def read_corpus(spec: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Corpus:
    """A corpus from a text file, a folder (every text file under it, sorted) or a glob.

    In a folder or a glob, files that are not text (binary, undecodable, empty) are
    skipped and counted, so a code base with images in it still trains; hidden files and
    folders are left out. A single file must be text.
    """
    path = Path(spec)
    if path.is_file() or not (path.is_dir() or any(ch in str(spec) for ch in "*?[")):
        return Corpus(read_text(path, encoding, errors), path.stem, 1, 0)
    if path.is_dir():
        files = sorted(
            f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
        )
        name = path.resolve().name
    else:
        files = sorted(Path(f) for f in glob.glob(str(spec), recursive=True) if Path(f).is_file())
        name = "glob"
    parts, skipped = [], 0
    for file in files:
        try:
            text = read_text(file, encoding, errors)
        except CharlstmError:
            skipped += 1
            continue
        parts.append(text if text.endswith("\n") else text + "\n")
    if not parts:
        raise CharlstmError(f"no text files in {spec} ({len(files)} files, {skipped} skipped as not text)")
    text = "".join(parts)
    check_text(text, f"corpus {spec}")
    return Corpus(text, name, len(parts), skipped)


def check_text(text: str, name: str) -> None:
    """Refuse text that cannot be a character-level corpus."""
    if not text:
        raise CharlstmError(f"{name} has no characters")
    vocabulary = len(set(text))
    if vocabulary > MAX_VOCABULARY:
        raise CharlstmError(
            f"{name} has {vocabulary} distinct characters (more than {MAX_VOCABULARY}); "
            "it looks binary or mixes many scripts"
        )


def default_corpus() -> str:
    """A few MB of Python source from this interpreter's own standard library.

    Every Python installation has it, so `charlstm train` works with no download and the
    project ships no text it did not write. Files are taken in sorted order until the
    budget is met, so the corpus is the same on every run of the same Python.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for file in sorted(stdlib.glob("*.py")):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= DEFAULT_CORPUS_CHARS:
            break
    if not parts:
        raise CharlstmError(f"this Python has no standard-library source under {stdlib}; give a corpus file")
    return "".join(parts)


def split(tokens: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training head and validation tail: contiguous, so no text leaks across the cut."""
    if not 0.0 <= val_frac < 1.0:
        raise CharlstmError(f"--val-frac must be in [0, 1), got {val_frac}")
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
        if cover_all and self.windows >= 1:
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
