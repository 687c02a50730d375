"""Shared fixtures: small corpora and a tiny trained run, built once per session.

Every text here is made by the tests themselves (see `tests/helpers.py`), so a fresh clone
with nothing beside it runs the whole suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charlstm import threads
from tests.helpers import ENGLISH_CHARACTERS, english_text, run_cli, torch_settings_kept, train_args

# The headless-browser fixtures (`browser_page`) for tests of the HTML pages charlstm writes.
pytest_plugins = ["tests.browser"]


@pytest.fixture(scope="session", autouse=True)
def token_cache_folder(tmp_path_factory) -> Path:
    """Token caches go to a temporary folder, never the user's ~/.cache (the CLI runs inherit it)."""
    folder = tmp_path_factory.mktemp("token-cache")
    os.environ["CHARLSTM_CACHE"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def free_machine(monkeypatch):
    """Commands run in this process read the CPU as free: whether they print the busy note
    (threads.busy_hint) would otherwise depend on what else the machine runs, and no test may.
    Tests of the note hand busy_hint a load of their own."""
    monkeypatch.setattr(threads, "others_running", lambda: 0)


@pytest.fixture(autouse=True)
def torch_settings():
    """Each test gets torch's settings as the one before found them (threads, TF32, RNG, ...)."""
    with torch_settings_kept():
        yield


@pytest.fixture(scope="session")
def english() -> str:
    """60,000 characters of English prose (the standard library's docstrings)."""
    text = english_text(60_000)
    missing = ENGLISH_CHARACTERS - set(text)
    assert not missing, f"this Python's docstrings lack {sorted(missing)}: tests/helpers.english_text needs more"
    return text


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, english) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(english, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_corpus) -> Path:
    """A run folder trained for a few steps through the real CLI."""
    root = tmp_path_factory.mktemp("runs")
    result = run_cli(*train_args(small_corpus, root, steps=30, eval_every=15))
    assert result.returncode == 0, result.stderr
    (run,) = root.iterdir()
    return run
