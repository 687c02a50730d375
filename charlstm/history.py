"""What a run folder tells about its run: read for `charlstm runs` and `charlstm report`.

Besides its checkpoints, a run folder holds config.json (settings, corpus, parameters) and
metrics.jsonl (one record per evaluation: step, elapsed, lr, train_loss, val_loss, val_bpc).
The trainer keeps two more records for the tools here, both written through this module so
their format lives in one place:

    status.json    {"state": running | finished | interrupted | failed, "pid", "host",
                    "updated", "step", "elapsed", "error"}; replaced atomically when training
                   starts, after each evaluation (a heartbeat) and when it ends
    samples.jsonl  one {"step", "elapsed", "text"} line per sample the trainer printed

Reading never fails on a half-written run or one from an older charlstm: whatever is missing
or damaged becomes a note beside the run. No torch here: listing runs reads JSON only.

Which run a command takes when given none is decided here too, once (`newest_run`), so that
every command means the same run. Drawing the runs is `runs_table`'s and `report`'s job.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlstm import disk
from charlstm.errors import CharlstmError, WriteFailed

DEFAULT_ROOT = Path("checkpoints")
"""The folder that holds the runs when none is given: `train` writes them there, and `runs`,
`report` and every command that loads the newest run look there."""

CONFIG, METRICS, STATUS, SAMPLES = "config.json", "metrics.jsonl", "status.json", "samples.jsonl"
CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = (CONFIG, METRICS, STATUS, *CHECKPOINTS)
STATES = ("running", "finished", "interrupted", "failed")
LN2 = math.log(2)


# --- what the trainer writes ------------------------------------------------------------------


def write_status(run_dir: Path, state: str, step: int, elapsed: float, error: str | None = None) -> None:
    """Record where the run stands, atomically (a reader sees the old or the new file, whole).

    The status is a courtesy to `charlstm runs`: training never stops because it could not
    be written (a full disk shows up in the checkpoint save, with its own message).
    """
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    record = {
        "state": state,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "updated": round(time.time(), 3),
        "step": step,
        "elapsed": round(elapsed, 2),
        "error": error,
    }
    with contextlib.suppress(OSError, CharlstmError):
        disk.write_json(run_dir / STATUS, record)


def append_sample(run_dir: Path, step: int, elapsed: float, text: str) -> None:
    """Keep one sample the trainer printed, as one whole line or none (`disk.append_line`).

    A sample that cannot be written is dropped: samples are a convenience for `charlstm
    report`, and on a full disk the next checkpoint or metrics.jsonl record stops the
    run with its own line."""
    line = json.dumps({"step": step, "elapsed": round(elapsed, 2), "text": text}, ensure_ascii=False)
    with contextlib.suppress(WriteFailed):
        disk.append_line(run_dir / SAMPLES, line)


# --- reading a run folder ---------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run folder says, read once; `notes` say what was missing or damaged."""

    path: Path
    config: dict[str, Any]
    evaluations: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    status: dict[str, Any] | None
    last_active: float
    notes: list[str] = field(default_factory=list)
    has_samples_file: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> dict[str, Any]:
        return self.config.get("model") or {}

    @property
    def train(self) -> dict[str, Any]:
        return self.config.get("train") or {}

    @property
    def corpus(self) -> str | None:
        return self.config.get("corpus")

    @property
    def shape(self) -> str | None:
        """'lstm 2x256', or None when config.json does not say."""
        m = self.model
        if not {"cell", "layers", "hidden"} <= m.keys():
            return None
        return f"{m['cell']} {m['layers']}x{m['hidden']}"

    @property
    def parameters(self) -> int | None:
        return self.config.get("parameters")

    @property
    def val_bpc(self) -> list[float]:
        return [e["val_bpc"] for e in self.evaluations if e.get("val_bpc") is not None]

    @property
    def best_val_bpc(self) -> float | None:
        return min(self.val_bpc, default=None)

    @property
    def steps(self) -> int:
        """Steps trained: the status knows an interrupted run's last step, past its last evaluation."""
        steps = [e["step"] for e in self.evaluations[-1:]]
        if self.status and isinstance(self.status.get("step"), int):
            steps.append(self.status["step"])
        return max(steps, default=0)

    @property
    def elapsed(self) -> float:
        times = [e.get("elapsed") or 0.0 for e in self.evaluations[-1:]]
        if self.status and isinstance(self.status.get("elapsed"), int | float):
            times.append(float(self.status["elapsed"]))
        return max(times, default=0.0)


def is_run(path: Path) -> bool:
    """A folder with any of the files a run writes (a run killed before its first save has config.json)."""
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def read_run(path: Path) -> Run:
    """Read one run folder; never raises for what is inside it, only for a folder that is no run."""
    if not path.exists():
        raise CharlstmError(f"no run folder {path}")
    if not is_run(path):
        raise CharlstmError(
            f"{path} is not a run folder (no {CONFIG}, {METRICS} or checkpoint in it); runs are the folders under "
            f"{DEFAULT_ROOT}/, listed by: charlstm runs"
        )
    notes: list[str] = []
    config = _read_json(path / CONFIG, notes)
    if config is None:
        notes.append(f"no readable {CONFIG} (a run from an older charlstm, or killed at its start)")
        config = {}
    elif "parameters" not in config or "model" not in config:
        notes.append(f"{CONFIG} from an older charlstm: some settings unknown")
    evaluations = _evaluations(_read_lines(path / METRICS, notes))
    samples = _replayed(s for s in _read_lines(path / SAMPLES, notes) if isinstance(s.get("text"), str))
    status = _read_json(path / STATUS, notes)
    if status is not None and status.get("state") not in STATES:
        notes.append(f"{STATUS} names no known state")
        status = None
    return Run(
        path=path,
        config=config,
        evaluations=evaluations,
        samples=samples,
        status=status,
        last_active=_last_active(path),
        notes=notes,
        has_samples_file=(path / SAMPLES).exists(),
    )


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        notes.append(f"{path.name} is damaged or half-written (ignored)")
        return None
    return value if isinstance(value, dict) else None


def _read_lines(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """JSON lines; a damaged line is skipped with a note (the last one is often a write cut short)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            where = "ends in a half-written line" if number == len(lines) else f"has a damaged line {number}"
            notes.append(f"{path.name} {where} (skipped)")
            continue
        records.append(record)
    return records


def _evaluations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation records in step order, in bits/char as well as nats."""
    kept = []
    for record in _replayed(records):
        record = dict(record)
        if record.get("val_bpc") is None and isinstance(record.get("val_loss"), int | float):
            record["val_bpc"] = record["val_loss"] / LN2
        if isinstance(record.get("train_loss"), int | float):
            record["train_bpc"] = record["train_loss"] / LN2
        kept.append(record)
    return kept


def _replayed(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in step order, where a record repeated after a resume replaces the earlier one.

    A run killed after writing a record but before its checkpoint resumes from the checkpoint
    before, and writes those steps again.
    """
    kept: list[dict[str, Any]] = []
    for record in records:
        if not isinstance(record.get("step"), int):
            continue
        while kept and kept[-1]["step"] >= record["step"]:
            kept.pop()
        kept.append(record)
    return kept


def _last_active(path: Path) -> float:
    try:
        return max((f.stat().st_mtime for f in path.iterdir()), default=path.stat().st_mtime)
    except OSError:
        return 0.0


# --- the run's state --------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def state_of(
    run: Run, alive: Callable[[int], bool] = process_alive, host: str | None = None, now: float | None = None
) -> tuple[str, str | None]:
    """(state, note): running, finished, interrupted, failed, stopped (the process died without
    saying, e.g. killed) or unknown (a run from before status.json; finished when its metrics
    reach its budget)."""
    host = host or socket.gethostname()
    status = run.status
    if status is None:
        budget_steps, budget_time = run.train.get("max_steps") or 0, run.train.get("max_time") or 0
        last = run.evaluations[-1] if run.evaluations else {}
        if (budget_steps and last.get("step", 0) >= budget_steps) or (
            budget_time and (last.get("elapsed") or 0) >= budget_time
        ):
            return "finished", None
        return "unknown", f"no {STATUS} (a run from an older charlstm): finished, interrupted or killed"
    state = status["state"]
    if state == "failed":
        return "failed", status.get("error") or None
    if state != "running":
        return state, None
    if status.get("host") not in (None, host):
        ago = _ago((now or time.time()) - float(status.get("updated") or 0))
        return "running", f"on {status['host']}, last heard from {ago} ago (cannot check from here)"
    pid = status.get("pid")
    if isinstance(pid, int) and alive(pid):
        return "running", None
    return "stopped", f"the process ended without saying (killed?); continue it: charlstm train --resume {run.path}"


def _ago(seconds: float) -> str:
    return format_duration(max(seconds, 0.0))


# --- listing ----------------------------------------------------------------------------------


def find_runs(root: Path) -> list[Run]:
    """Every run under `root` (or `root` itself when it is a run), most recently active first."""
    if not root.exists():
        raise CharlstmError(f"there is no folder {root}; give the folder that holds your runs: charlstm runs FOLDER")
    if not root.is_dir():
        raise CharlstmError(f"{root} is a file; give the folder that holds your runs: charlstm runs FOLDER")
    if is_run(root):
        return [read_run(root)]
    return [read_run(d) for d in _newest_first(d for d in root.iterdir() if is_run(d))]


def newest_run(root: Path) -> Run:
    """The run a command takes when given none: the most recently active run under `root` that
    holds a checkpoint, the highest such in `charlstm runs`' list. One rule, so that sample,
    eval, inspect-gates, serve, report and `charlstm.load()` all mean the same run; a run
    killed before its first save is passed over, since it has nothing to load."""
    folders = [d for d in root.iterdir() if is_run(d)] if root.is_dir() else []
    for folder in _newest_first(folders):
        if any((folder / name).is_file() for name in CHECKPOINTS):
            return read_run(folder)
    raise CharlstmError(f"no trained runs under {root}/; train one first: charlstm train")


def _newest_first(folders: Iterable[Path]) -> list[Path]:
    """Most recently active first (the newest file in the folder), then by name."""
    return sorted(folders, key=lambda d: (_last_active(d), d.name), reverse=True)


def summary(run: Run, state: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """One run as plain values (what `charlstm runs --json` prints)."""
    state_name, state_note = state or state_of(run)
    m = run.model
    return {
        "name": run.name,
        "path": str(run.path),
        "corpus": run.corpus,
        "cell": m.get("cell"),
        "layers": m.get("layers"),
        "hidden": m.get("hidden"),
        "parameters": run.parameters,
        "steps": run.steps,
        "elapsed": round(run.elapsed, 2),
        "best_val_bpc": run.best_val_bpc,
        "state": state_name,
        "val_bpc": run.val_bpc,
        "last_active": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.last_active)),
        "notes": run.notes + ([state_note] if state_note else []),
    }


# --- small formats shared by the state notes, the table and the page ------------------------------


def format_duration(seconds: float) -> str:
    """'42s', '5m 02s', '2h 05m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_count(n: int | None) -> str:
    """'52.3k', '1.21M'; '?' when unknown."""
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)
