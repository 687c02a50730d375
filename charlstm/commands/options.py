"""What several commands share: options read from config.py, the settings a user typed,
thread setup and a console that prints text as it is."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import typer

from charlstm import threads
from charlstm.config import FLAGS, THREADS, help_text


def given(config: type, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of `config` the user actually typed (Typer defaults are None here)."""
    return {f.name: options[f.name] for f in fields(config) if options.get(f.name) is not None}


def console(stderr: bool = False):
    """Rich, told to print text as it is: prime texts, corpus names and paths may hold
    `[...]` that markup would swallow (`[i]`) or refuse (`[/a]`)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False)


def setting_option(config: type, name: str, text: str | None = None, *aliases: str) -> Any:
    """An option for setting `name` of `config`: its flag and default come from config.py, and
    so do its help and one-letter alias when the field carries them (`config.setting`)."""
    (found,) = [f for f in fields(config) if f.name == name]
    text = text or found.metadata["help"]
    short = found.metadata.get("short")
    return typer.Option(
        FLAGS[name], *aliases, *([short] if short else []), help=help_text(config, name, text), show_default=False
    )


THREADS_OPTION = typer.Option(
    "--threads",
    help=f"CPU threads: a number, or auto (OMP_NUM_THREADS if set, else every core). \\[default: {THREADS}]",
    show_default=False,
)

SERVE_THREADS_OPTION = typer.Option(
    "--threads",
    help="CPU threads the model computes with: a number, or auto (OMP_NUM_THREADS if set, else every core but "
    f"{threads.SERVER_SPARE_CORES}, left to the request threads). \\[default: {THREADS}]",
    show_default=False,
)

CHECKPOINT_OPTION = typer.Option(
    "--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False
)


def use_threads(setting: str, spare: int = 0) -> int:
    """--threads, before the command computes (charlstm/threads.py); the count in use. `spare`:
    cores `auto` leaves to the process's other threads (a server's request threads)."""
    return threads.apply(setting, spare)


def busy_hint(threads_in_use: int, command: str) -> str | None:
    """threads.busy_hint, reachable from commands whose `threads` option shadows the module."""
    return threads.busy_hint(threads_in_use, command=command)
