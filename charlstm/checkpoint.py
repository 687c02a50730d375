"""The checkpoint format, atomic saving, safe loading, and finding runs.

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

A run folder holds last.pt, best.pt (lowest validation loss), metrics.jsonl and
config.json. Saving writes a temporary file beside the target, fsyncs it and renames it
over the target (`atomic_write`), so a crash at any instant leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, ModelConfig
from charlstm.tokenizer import Vocabulary

FORMAT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"
DEFAULT_ROOT = Path("checkpoints")


def atomic_write(path: Path, content: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `content` (bytes, or a function that writes into the open file) to `path` so
    that `path` is always either the old file or the whole new one.

    Every file charlstm keeps is written this way: checkpoints, config.json, the token
    cache. The new content goes to a temporary file in the same folder (one file system, so
    the rename is atomic), is flushed and fsynced, then `os.replace`s `path`; the folder is
    fsynced so the rename itself survives a power cut. On any failure the temporary file is
    removed and `path` is untouched; an OSError is left for the caller to word.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Save a checkpoint so that `path` is always either the old or the new file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as e:
        raise CharlstmError(f"could not save {path}: {e.strerror or e}; the previous file is intact") from e


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written checkpoints left by a writer that was killed mid-save.

    Only one trainer writes a run folder, so when a run resumes, every temporary file in
    it belongs to a dead process; left alone, each kill would leave one behind.
    """
    for stale in run_dir.glob(".*.pt.*.tmp"):
        stale.unlink(missing_ok=True)


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


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything that is not one of ours."""
    path = resolve(path)
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


def load_model(path: str | Path) -> tuple[CharLSTM, Vocabulary, dict[str, Any]]:
    """The model (on the CPU, in eval mode), its vocabulary, and the whole checkpoint."""
    payload = load(path)
    try:
        config = ModelConfig(**payload["model_config"])
        vocabulary = Vocabulary(payload["vocabulary"])
        model = CharLSTM(config)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CharlstmError(f"{resolve(path)} is damaged or from an incompatible charlstm: {e}") from e
    return model.eval(), vocabulary, payload


def resolve(path: str | Path | None, root: Path = DEFAULT_ROOT) -> Path:
    """A checkpoint file from a file, a run folder, or nothing (the newest run).

    A run folder means its best.pt, or last.pt when no validation has happened yet.
    """
    if path is None:
        return resolve(newest_run(root))
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CharlstmError(f"run folder {path} has no {BEST} or {LAST} yet")
    if not path.exists():
        raise CharlstmError(f"checkpoint {path} does not exist")
    return path


def newest_run(root: Path = DEFAULT_ROOT) -> Path:
    runs = [d for d in root.glob("*") if (d / LAST).is_file() or (d / BEST).is_file()]
    if not runs:
        raise CharlstmError(f"no trained runs under {root}/; train one first: charlstm train")
    return max(runs, key=lambda d: max(f.stat().st_mtime for f in d.glob("*.pt")))


def write_json(path: Path, value: dict[str, Any]) -> None:
    """A readable JSON file (config.json), written whole or not at all."""
    try:
        atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())
    except OSError as e:
        raise CharlstmError(f"could not write {path}: {e.strerror or e}") from e
