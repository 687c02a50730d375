"""Which text a benchmark measures on: `--corpus PATH`, else the catalogue's tiny-shakespeare.

Published numbers are measured on tiny-shakespeare, which the project does not ship: a user
fetches it once with `charlstm corpus get tinyshakespeare` (into the current folder, or --to).
Without --corpus a benchmark uses that verified copy, looked for in the current folder and the
repository root; with neither it stops with one line saying what to do. Every result row names
the corpus it was measured on (`describe`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from charlstm import catalogue
from charlstm.errors import CharlstmError

BENCHMARK_CORPUS = "tinyshakespeare"
REPOSITORY = Path(__file__).resolve().parents[1]


def add_corpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help=f"text file to train on [default: {BENCHMARK_CORPUS}.txt as `charlstm corpus get {BENCHMARK_CORPUS}` "
        "wrote it, in the current folder or the repository root]",
    )


def find_corpus(given: Path | None) -> Path:
    """The file to measure on, or exit with one line on stderr saying how to get one."""
    if given is not None:
        if not given.is_file():
            sys.exit(f"{Path(sys.argv[0]).name}: --corpus {given} is not a file")
        return given
    try:
        found = catalogue.find_fetched(BENCHMARK_CORPUS, [catalogue.DEFAULT_FOLDER, REPOSITORY])
    except CharlstmError as e:
        sys.exit(f"{Path(sys.argv[0]).name}: {e}")
    if found is None:
        sys.exit(
            f"{Path(sys.argv[0]).name}: no corpus: run `charlstm corpus get {BENCHMARK_CORPUS}` here "
            "(needs the internet once) or pass --corpus PATH"
        )
    return found


def describe(path: Path) -> dict:
    """The corpus fields of a result row: its file name and the start of its SHA-256."""
    return {"corpus": path.name, "corpus_sha256": catalogue.file_sha256(path)[:12]}
