"""The checkpoint format, atomic saving, safe loading, and turning a path into a checkpoint file.

A checkpoint is one `torch.save` file of plain values and tensors, so
`torch.load(path, weights_only=True)` reads it and a stranger's file cannot run code:

    format        FORMAT_VERSION (int); a newer file is refused with a clear message
    model_config  ModelConfig as a dict
    vocabulary    the characters, in id order (str)
    model         the weights (state_dict)
    train_config  TrainConfig as a dict (absent from weights-only exports)
    resume        optimizer state, step, elapsed seconds, best validation loss, carried
                  hidden state (every stream's, also from a distributed run) and the
                  corpus SHA-256: everything an exact resume needs, since batches and
                  dropout masks are addressed by (seed, step)

In the program a checkpoint is a `Checkpoint` (its `Resume` inside), checked once where it
is read (`Checkpoint.from_payload`) and read by attribute everywhere after; the dict above
is only what goes to and comes from the file (`to_payload`).

A run folder holds last.pt, best.pt (lowest validation loss), metrics.jsonl and
config.json. Saving writes a temporary file beside the target, fsyncs it and renames it
over the target (`disk.atomic_write`), so a crash at any instant leaves the previous file
whole, and a full or failing disk is one line (`errors.WriteFailed`) that says what was kept.
"""

from __future__ import annotations

import errno
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from charlstm import disk, history
from charlstm.config import TrainConfig
from charlstm.errors import REASONS, CharlstmError, WriteFailed, size_text
from charlstm.model import CharLSTM, ModelConfig
from charlstm.tokenizer import Vocabulary

FORMAT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"


@dataclass
class Resume:
    """What an exact resume needs besides the weights and settings: the optimizer's state,
    the step, the seconds spent training and (on --max-time) evaluating, the best validation
    loss so far, every stream's carried hidden state, and the SHA-256 of the corpus."""

    optimizer: dict[str, Any]
    step: int
    elapsed: float
    best_val_loss: float
    carried_state: list[torch.Tensor]
    corpus_sha256: str
    evaluating: float = 0.0  # absent from checkpoints written before evaluations counted

    @classmethod
    def from_payload(cls, saved: dict[str, Any]) -> Resume:
        """The file's `resume` record; keys it no longer uses (an older charlstm's `rng`) are left."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass
class Checkpoint:
    """One checkpoint: the model's settings, vocabulary and weights, and for a run's own
    checkpoints its training settings and what resuming needs (None in weights-only files)."""

    model_config: ModelConfig
    vocabulary: Vocabulary
    weights: dict[str, torch.Tensor]
    train_config: TrainConfig | None = None
    resume: Resume | None = None
    format: int = FORMAT_VERSION

    def to_payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes, in the layout of the module docstring."""
        payload: dict[str, Any] = {
            "format": self.format,
            "model_config": self.model_config.to_dict(),
            "vocabulary": self.vocabulary.chars,
            "model": self.weights,
        }
        if self.train_config is not None:
            payload["train_config"] = asdict(self.train_config)
        if self.resume is not None:
            payload["resume"] = asdict(self.resume)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path) -> Checkpoint:
        """A checkpoint read from `payload` (what `read_payload` returns for the file at `path`),
        every part checked once here, so a damaged or foreign file is one line, not a
        KeyError later. Training settings this charlstm no longer has (from an older one)
        are left out: they are not needed to sample, inspect or serve the model."""
        try:
            train_config = payload.get("train_config")
            resume = payload.get("resume")
            weights = payload["model"]
            if not isinstance(weights, dict):
                raise TypeError("its weights are not a state_dict")
            return cls(
                model_config=ModelConfig(**payload["model_config"]),
                vocabulary=Vocabulary(payload["vocabulary"]),
                weights=weights,
                train_config=_known_settings(train_config) if train_config is not None else None,
                resume=Resume.from_payload(resume) if resume is not None else None,
                format=payload["format"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CharlstmError(f"{path} is damaged or from an incompatible charlstm: {e}") from e

    def model(self) -> CharLSTM:
        """The model these weights are for, on the CPU, in eval mode."""
        model = CharLSTM(self.model_config)
        model.load_state_dict(self.weights)
        return model.eval()


def _known_settings(saved: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in names})


def save_atomic(payload: dict[str, Any], path: Path, kept: str | None = None) -> None:
    """Save a checkpoint so that `path` is always either the old or the new file; a failed
    write raises `WriteFailed` (by default saying the previous file is intact).

    PyTorch's zip writer answers a short write with its own RuntimeError ("[enforce fail at
    inline_container.cc] unexpected pos ..."); `disk.atomic_write` keeps the operating
    system's error from under it, and a writer failure with no such error is still worded.
    """
    needed = payload_bytes(payload)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk.failed(path, e, needed, kept) from e

    def write(sink: disk.Sink) -> None:
        try:
            torch.save(payload, sink)
        except OSError as e:
            if sink.error is None:
                raise disk.failed(path, e, needed) from e
            raise
        except RuntimeError as e:
            if sink.error is None and any(mark in str(e) for mark in WRITER_FAILURES):
                raise _writer_failed(path, e, needed, sink) from e
            raise

    disk.atomic_write(path, write, needed, kept)


WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos", "file write failed")
"""What PyTorch's RuntimeError says when its zip writer could not write."""


def _writer_failed(path: Path, error: RuntimeError, needed: int, sink: disk.Sink) -> WriteFailed:
    """PyTorch's writer stopped with no error from the disk: out of space if the space free
    (counting the temporary file, which is about to go) is less than the checkpoint needs."""
    free = disk.free_space(path.parent)
    if free is not None:
        free += sink.tell()
        if free < needed:
            return WriteFailed(path, REASONS[errno.ENOSPC], needed, free, code=errno.ENOSPC)
    return WriteFailed(path, f"PyTorch's writer failed ({str(error).splitlines()[0]})", needed)


def payload_bytes(payload: Any) -> int:
    """About how many bytes `torch.save(payload)` writes: its tensors' storage, plus a little
    for the pickle and the zip records around them."""
    seen: set[int] = set()

    def walk(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes() + 128
        if isinstance(value, dict):
            return sum(walk(k) + walk(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return sum(walk(v) for v in value)
        return 16

    return walk(payload) + 4096


def checkpoint_bytes(parameters: int, carried: int = 0) -> int:
    """About how big a resumable checkpoint is for a float32 model of `parameters`
    parameters: the weights and AdamW's two moments for each, the carried state (elements),
    and the pickle and zip records around them."""
    return 4 * (3 * parameters + carried) + 64 * 1024


def space_warning(folder: Path, size: int) -> str | None:
    """One line when `folder` has clearly less room than two checkpoints of `size` bytes
    (last.pt and best.pt; a save also needs room for its temporary copy), else None."""
    free = disk.free_space(folder)
    if free is None or free >= 2 * size:
        return None
    return (
        f"only {size_text(free)} free in {folder}, and a checkpoint of this model takes about "
        f"{size_text(size)} (a run keeps last.pt and best.pt): saves may fail; free space first"
    )


def saved_step(path: Path) -> int | None:
    """The training step of the checkpoint at `path`, read back (memory-mapped, so the
    weights are not read); None if there is none or it cannot be read whole."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(payload["resume"]["step"])  # that alone: the weights stay unread
    except Exception:  # missing, damaged or weights-only: not a checkpoint to resume from
        return None


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint onto the CPU, refusing anything that is not one of ours."""
    path = resolve(path)
    return Checkpoint.from_payload(read_payload(path), path)


def read_payload(path: Path) -> dict[str, Any]:
    """The dict saved at `path`, read onto the CPU without running any code it holds,
    refused unless it is a charlstm file of a format this charlstm reads."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):
            raise CharlstmError(f"{path} is not a readable checkpoint (truncated or not a charlstm file)") from e
        raise CharlstmError(
            f"{path} is not a charlstm checkpoint: it holds objects that loading would have to "
            "execute, which charlstm refuses"
        ) from e
    except Exception as e:  # a foreign file can fail the unpickler in any way at all
        raise CharlstmError(f"{path} is not a readable checkpoint (truncated or not a charlstm file)") from e
    if not isinstance(payload, dict) or "format" not in payload:
        raise CharlstmError(f"{path} is not a charlstm checkpoint")
    if not isinstance(payload["format"], int) or payload["format"] > FORMAT_VERSION:
        raise CharlstmError(
            f"{path} has checkpoint format {payload['format']}, newer than this charlstm reads "
            f"({FORMAT_VERSION}); upgrade charlstm"
        )
    return payload


def load_model(path: str | Path) -> tuple[CharLSTM, Vocabulary, Checkpoint]:
    """The model (on the CPU, in eval mode), its vocabulary, and the whole checkpoint."""
    saved = load(path)
    try:
        model = saved.model()
    except RuntimeError as e:  # weights that do not fit the model its settings describe
        raise CharlstmError(f"{resolve(path)} is damaged or from an incompatible charlstm: {e}") from e
    return model, saved.vocabulary, saved


def resolve(path: str | Path | None, root: Path = history.DEFAULT_ROOT) -> Path:
    """A checkpoint file from a file, a run folder, or nothing (the newest run).

    A run folder means its best.pt, or last.pt when no validation has happened yet. A folder
    that holds runs (checkpoints/) is no checkpoint; the error names its newest run.
    """
    if path is None:
        return resolve(history.newest_run(root).path)
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        if history.is_run(path):
            raise CharlstmError(f"run folder {path} has no {BEST} or {LAST} yet")
        try:
            newest = history.newest_run(path).path
        except CharlstmError:
            raise CharlstmError(f"{path} holds no checkpoint and no trained run; train one: charlstm train") from None
        raise CharlstmError(f"{path} holds runs, not a checkpoint; its newest trained run is {newest}")
    if not path.exists():
        raise CharlstmError(f"checkpoint {path} does not exist")
    return path
