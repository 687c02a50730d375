"""The `charlstm` command: the app, the options every command shares, and `main`, which turns
every failure into one line. The commands themselves live in charlstm/commands/, one module
per group, and register on `app` when imported (at the end of this file).

torch is imported inside the commands, never at module level, so `charlstm --help`
stays fast. Every error a user can cause ends here as one line on stderr (see `main`).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import fields
from typing import Annotated, Any

import typer

from charlstm import __version__, threads
from charlstm.config import FLAGS, THREADS, help_text
from charlstm.errors import CharlstmError

app = typer.Typer(
    name="charlstm",
    help="Train character-level LSTM language models, stream samples, and see inside the gates.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


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
    """`--debug` is read by `main` before parsing, so that it also covers parsing errors."""


def _given(config: type, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of `config` the user actually typed (Typer defaults are None here)."""
    return {f.name: options[f.name] for f in fields(config) if options.get(f.name) is not None}


def _console(stderr: bool = False):
    """Rich, told to print text as it is: prime texts, corpus names and paths may hold
    `[...]` that markup would swallow (`[i]`) or refuse (`[/a]`)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False)


def _setting_option(config: type, name: str, text: str, *aliases: str) -> Any:
    """An option for setting `name` of `config`: its flag and its default come from config.py."""
    return typer.Option(FLAGS[name], *aliases, help=help_text(config, name, text), show_default=False)


_THREADS = typer.Option(
    "--threads",
    help=f"CPU threads: a number, or auto (OMP_NUM_THREADS if set, else every core). \\[default: {THREADS}]",
    show_default=False,
)


_CHECKPOINT = typer.Option(
    "--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False
)


def _use_threads(setting: str) -> int:
    """--threads, before the command computes (charlstm/threads.py); the count in use."""
    return threads.apply(setting)


def _busy_hint(threads_in_use: int) -> str | None:
    """threads.busy_hint, reachable from commands whose `threads` option shadows the module."""
    return threads.busy_hint(threads_in_use)


def _report(message: str) -> None:
    print(f"charlstm: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and an exit code."""
    # torch warns on import when numpy is absent; charlstm needs numpy only for --npz.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    debug = os.environ.get("CHARLSTM_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    code = 0
    try:
        result = app(args=argv, standalone_mode=False, prog_name="charlstm")
        code = result if isinstance(result, int) else 0
    except typer.Abort:
        _report("aborted")
        code = EXIT_INTERRUPTED
    except typer.TyperException as e:
        context = getattr(e, "ctx", None)
        hint = f" (see: {context.command_path} --help)" if context and context.info_name != "charlstm" else ""
        _report((e.format_message() or "missing command") + hint)
        code = EXIT_USAGE
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        _report("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        from charlstm.trainer import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            if os.environ.get("RANK", "0") != "0":
                sys.exit(EXIT_INTERRUPTED)
            print(f"charlstm: {e}; continue with: charlstm train --resume {e.path.parent}", file=sys.stderr)
            code = EXIT_INTERRUPTED
        elif isinstance(e, CharlstmError):
            from charlstm.errors import WriteFailed

            if not (isinstance(e, WriteFailed) and os.environ.get("RANK", "0") != "0"):  # rank 0 says it once
                _report(str(e))
            code = EXIT_ERROR
        else:
            _report(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
            code = EXIT_ERROR
    sys.exit(code)


# The commands register themselves on `app` when imported; below everything they import from here.
from charlstm.commands import train, generate, inspect, runs, corpus  # noqa: E402, F401, I001 (help lists them in this order)
