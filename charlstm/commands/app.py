"""The Typer app every command registers on, and the exit codes `cli.main` gives.

Apart from `cli.py` so that the commands can import it while `cli.py` imports the commands:
the arrows go `cli -> commands -> app`, never back.
"""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperCommand

from charlstm import __version__

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
"""Anything else; an option or argument that is malformed or out of range; Ctrl-C."""

app = typer.Typer(
    name="charlstm",
    help="Train character-level LSTM language models, stream samples, and see inside the gates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Command(TyperCommand):
    """A command whose usage line names its arguments as people write them (`charlstm eval
    [OPTIONS] CORPUS`), not in the braces Typer puts around required ones (`{corpus}`)."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]


def _version(value: bool) -> None:
    if value:
        print(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set CHARLSTM_DEBUG=1).")] = False,
) -> None:
    """`--debug` is read by `main` before parsing, anywhere in the command line, so that it also
    covers parsing errors; it is listed here for --help."""
