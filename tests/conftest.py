"""Shared fixtures: small corpora and a tiny trained run, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The headless-browser fixtures (`browser_page`) for tests of the HTML pages charlstm writes.
pytest_plugins = ["tests.browser"]

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
TINY_MODEL = ["--layers", "2", "--hidden", "32", "--embedding", "16", "--batch-size", "8", "--seq-len", "32"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m charlstm ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CHARLSTM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args], cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs
    )


@pytest.fixture(scope="session", autouse=True)
def token_cache_folder(tmp_path_factory) -> Path:
    """Token caches go to a temporary folder, never the user's ~/.cache (the CLI runs inherit it)."""
    folder = tmp_path_factory.mktemp("token-cache")
    os.environ["CHARLSTM_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, shakespeare_text) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(shakespeare_text[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_corpus) -> Path:
    """A run folder trained for a few steps through the real CLI."""
    root = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "train",
        str(small_corpus),
        "--max-steps",
        "30",
        "--max-time",
        "0",
        "--eval-every",
        "15",
        "--sample-every",
        "0",
        "--checkpoints",
        str(root),
        *TINY_MODEL,
    )
    assert result.returncode == 0, result.stderr
    (run,) = root.iterdir()
    return run
