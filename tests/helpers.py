"""What many test files share: running the CLI, a train command line, text to train on, a
disk that fails on cue, and a Ctrl-C at a chosen step.

Tests never read a file outside the repository: their text is made here from what every
Python installation has (the standard library's own documentation) or written by the test.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import string
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from charlstm import disk
from charlstm.trainer import TrainListener

TINY_MODEL = ["--layers", "2", "--hidden", "32", "--embedding", "16", "--batch-size", "8", "--seq-len", "32"]
"""A model small enough that a few dozen steps take a second or two."""


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m charlstm ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CHARLSTM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args], cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs
    )


def invoke(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`charlstm ARGS` in this process: (exit code, stdout, stderr)."""
    from charlstm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def train_args(
    corpus: str | Path,
    checkpoints: str | Path,
    *extra: str,
    steps: int,
    eval_every: int | None = None,
    sample_every: int = 0,
    model: list[str] = TINY_MODEL,
) -> list[str]:
    """`train CORPUS` for a fixed number of steps and no time limit, into CHECKPOINTS, with the
    tiny model; `extra` options go before the model's so a test can add any (a --cell, a --seed).

    fp32 unless `extra` says otherwise: `--precision auto` times bf16 against fp32 where bf16 is
    native, and two runs a test compares must not choose differently by the machine's load."""
    args = ["train", str(corpus), "--max-steps", str(steps), "--max-time", "0"]
    if "--precision" not in extra:
        args += ["--precision", "fp32"]
    if eval_every is not None:
        args += ["--eval-every", str(eval_every)]
    return [*args, "--sample-every", str(sample_every), "--checkpoints", str(checkpoints), *extra, *model]


ENGLISH_CHARACTERS = set(string.ascii_letters + string.digits + " \n.,;:'\"()?-")
"""What the tests' English corpus must hold, so a test's prime ('ROMEO:', 'Juliet?') is in its vocabulary."""


def english_text(chars: int) -> str:
    """About `chars` characters of English prose: paragraphs of the standard library's docstrings.

    Only plain paragraphs are kept (ASCII, not indented, no doctest, mostly letters), each once,
    taken from the modules in sorted order, so the text is the same on every run of one Python.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paragraphs: dict[str, None] = {}
    size = 0
    for file in sorted(stdlib.glob("*.py")):
        if file.name.startswith("_") or size >= chars:
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                for paragraph in (ast.get_docstring(node) or "").split("\n\n"):
                    if _is_prose(paragraph) and paragraph not in paragraphs:
                        paragraphs[paragraph] = None
                        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:chars] + "\n"


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    letters = sum(ch.isalpha() or ch == " " for ch in paragraph)
    return (
        len(paragraph) > 80
        and paragraph.isascii()
        and not any(line.startswith((" ", "\t", ">>>")) for line in lines)
        and letters > 0.85 * len(paragraph)
    )


@contextlib.contextmanager
def torch_settings_kept() -> Iterator[None]:
    """Whatever the body changes in torch's process-wide settings is put back afterwards: thread
    count, TF32 switches and matmul precision, deterministic mode, default dtype and the CPU
    random state. conftest wraps every test in it, so no test leaves global state to the next.

    TF32 is kept through the legacy API the tests use (`allow_tf32`): once the legacy and the new
    `fp32_precision` API are mixed, torch refuses to read the legacy one."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    tf32 = (torch.get_float32_matmul_precision(), matmul.allow_tf32, cudnn.allow_tf32)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_float32_matmul_precision(tf32[0])
        matmul.allow_tf32, cudnn.allow_tf32 = tf32[1:]
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.set_rng_state(rng)


# --- a failing disk -----------------------------------------------------------------------------

REASON = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "input/output error",
}
ERRNOS = list(REASON)


class FailingDisk:
    """Writes to files whose name contains `name` fail with `code` once `healthy` such files
    have been written whole (after `partial` bytes of the failing one reach the disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, code: int, healthy: int = 0, partial: int = 0):
        self.name, self.code, self.partial = name, code, partial
        self.files_seen: list[str] = []
        self.healthy = healthy
        real = disk._write_fd

        def write(fd: int, data) -> int:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if self.name not in Path(target).name:
                return real(fd, data)
            if target not in self.files_seen:
                self.files_seen.append(target)
            if len(self.files_seen) <= self.healthy:
                return real(fd, data)
            if self.partial:
                n = real(fd, bytes(data[: self.partial]))
                self.partial = 0
                return n
            raise OSError(self.code, os.strerror(self.code))

        monkeypatch.setattr(disk, "_write_fd", write)


class InterruptAt(TrainListener):
    """A listener that presses Ctrl-C when the trainer reports `step` (it reports every 10)."""

    def __init__(self, step: int):
        self.step = step

    def stepped(self, step: int, loss: float, chars_per_sec: float) -> None:
        if step == self.step:
            raise KeyboardInterrupt
