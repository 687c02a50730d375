"""Run folders written by hand, as the trainer writes them, for the tests of `charlstm runs` and `report`.

Reading a folder needs no training: these are exact in their numbers, fast, and can be
damaged or aged on purpose.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

LN2 = math.log(2)


def write_run(
    root: Path,
    name: str,
    val_bpc: list[float] = (3.0, 2.4, 2.1, 2.0),
    every: int = 100,
    state: str | None = "finished",
    cell: str = "lstm",
    mtime: float | None = None,
    saved: bool = True,
    **status: object,
) -> Path:
    """A run folder as the trainer writes it: config, one metrics record per evaluation, samples, status,
    and (unless `saved` is False: a run stopped before its first save) last.pt and best.pt, which
    nothing here reads but whose presence makes the run one a command may load."""
    run = root / name
    run.mkdir(parents=True)
    steps = every * len(val_bpc)
    config = {
        "model": {"cell": cell, "layers": 2, "hidden": 64, "embedding": 16, "dropout": 0.0, "vocab_size": 70},
        "train": {"corpus": "text.txt", "max_steps": steps, "max_time": 0, "eval_every": every, "lr": 0.012},
        "corpus": "text.txt",
        "corpus_sha256": "0" * 64,
        "parameters": 61_254,
    }
    (run / "config.json").write_text(json.dumps(config))
    with open(run / "metrics.jsonl", "w") as f:
        for i, bpc in enumerate(val_bpc, 1):
            record = {"step": i * every, "elapsed": i * 2.5, "lr": 0.01 / i, "train_loss": (bpc + 0.1) * LN2}
            f.write(json.dumps(record | {"val_loss": bpc * LN2, "val_bpc": bpc}) + "\n")
    with open(run / "samples.jsonl", "w") as f:
        for i in range(2, len(val_bpc) + 1, 2):
            f.write(json.dumps({"step": i * every, "elapsed": i * 2.5, "text": f"sample at {i * every}"}) + "\n")
    if state is not None:
        record = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "updated": 0.0}
        record |= {"step": steps, "elapsed": len(val_bpc) * 2.5, "error": None} | status
        (run / "status.json").write_text(json.dumps(record))
    if saved:
        for name in ("last.pt", "best.pt"):
            (run / name).write_bytes(b"not read by the listing")
    if mtime is not None:
        for f in run.iterdir():
            os.utime(f, (mtime, mtime))
    return run
