"""The commands that make or fetch text: `synth` and `corpus list/get`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from charlstm.commands.app import Command, app
from charlstm.commands.options import console


@app.command(
    cls=Command,
    epilog="Examples:\n\n  charlstm synth copy copy.txt\n\n  charlstm synth brackets brackets.txt --chars 2000000",
)
def synth(
    task: Annotated[
        str, typer.Argument(help="copy (recall a key across a long gap) or brackets (nested matching).", metavar="TASK")
    ],
    out: Annotated[Path, typer.Argument(help="File to write; an existing file is never overwritten.", metavar="OUT")],
    chars: Annotated[int, typer.Option("--chars", help="At least this many characters, in whole lines.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same text.")] = 0,
) -> None:
    """Write a synthetic corpus with long-range dependencies (where a plain RNN fails)."""
    from charlstm.synthetic import make, write

    text, probes = make(task, chars, seed)
    write(out, text)
    print(f"wrote {out}: {len(text):,} characters, {len(probes):,} long-range predictions")


corpus_app = typer.Typer(
    help="Standard corpora: list them, or fetch one with its SHA-256 checked.", no_args_is_help=True
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command(
    "list",
    cls=Command,
    epilog="Examples:\n\n  charlstm corpus list\n\n  charlstm corpus list --json | jq -r '.[].name'",
)
def corpus_list(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """The corpora `charlstm corpus get` can fetch, from corpora/catalogue.json."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from charlstm.catalogue import load_catalogue

    entries = list(load_catalogue().values())
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=1))
        return
    table = Table(box=None, show_edge=False)
    for column in ("name", "size", "licence", "what it is"):
        table.add_column(column, overflow="fold")
    for e in entries:
        size = e.member_bytes or e.bytes
        table.add_row(e.name, f"{size / 1e6:,.1f} MB", e.licence, e.description)
    console().print(table)


@corpus_app.command(
    "get",
    cls=Command,
    epilog="Examples:\n\n  charlstm corpus get tinyshakespeare\n\n  charlstm corpus get enwik8 --to data/",
)
def corpus_get(
    name: Annotated[str, typer.Argument(help="A name from `charlstm corpus list`.", metavar="NAME")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the corpus into.")] = Path("."),
) -> None:
    """Download a standard corpus; it keeps its name only if its SHA-256 matches the catalogue."""
    from tqdm import tqdm

    from charlstm.catalogue import entry, fetch

    item = entry(name)
    with tqdm(
        total=item.bytes, desc=f"downloading {name}", unit="B", unit_scale=True, disable=not sys.stderr.isatty()
    ) as bar:
        path, downloaded = fetch(item, to, lambda done, total: bar.update(done - bar.n))
    size = path.stat().st_size
    verb = "wrote" if downloaded else "already have"
    print(f"{verb} {path} ({size:,} bytes, SHA-256 verified); train on it: {item.train.replace(item.file, str(path))}")
