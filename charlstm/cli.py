"""The `charlstm` command's entry point: `main` runs the app and turns every failure into one
line and an exit code. The commands live in charlstm/commands/, one module per group, and
register on the app (`commands/app.py`) when this module imports them.

torch is imported inside the commands, never at module level, so `charlstm --help`
stays fast. Every error a user can cause ends here as one line on stderr (see `main`).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import warnings

import typer

from charlstm.commands.app import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, app
from charlstm.config import flag
from charlstm.errors import CharlstmError, SettingError

__all__ = ["app", "main"]

for _group in ("train", "generate", "inspect", "runs", "corpus"):  # importing registers them; help keeps this order
    importlib.import_module(f"charlstm.commands.{_group}")


def _report(message: str) -> None:
    print(f"charlstm: error: {message}", file=sys.stderr)


def _reader_left() -> int:
    """The reader of stdout closed it (`| head`): what it wanted arrived, so exit 0, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and an exit code."""
    # torch warns on import when numpy is absent; charlstm needs numpy only for --npz.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("CHARLSTM_DEBUG") == "1" or "--debug" in args
    if debug:  # taken here, so it works after the command's name too (`charlstm sample --debug`)
        end = args.index("--") if "--" in args else len(args)
        args = [arg for arg in args[:end] if arg != "--debug"] + args[end:]
    code = 0
    try:
        result = app(args=args, standalone_mode=False, prog_name="charlstm")
        code = result if isinstance(result, int) else 0
    except typer.Abort:
        _report("aborted")
        code = EXIT_INTERRUPTED
    except typer.TyperException as e:
        context = getattr(e, "ctx", None)
        hint = f" (see: {context.command_path} --help)" if context and context.info_name != "charlstm" else ""
        root = "" if hint else "; the commands are listed by: charlstm --help"  # bare `charlstm` also printed them
        _report((e.format_message() or f"missing command{root}") + hint)
        code = EXIT_USAGE
    except SystemExit as e:
        # click answers a closed pipe (EPIPE) itself: it wraps the streams to stay quiet, then exits 1
        if not (isinstance(e.__context__, OSError) and e.__context__.errno == errno.EPIPE):
            raise
        code = _reader_left()
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
        elif isinstance(e, SettingError):  # a malformed or out-of-range value exits 2, as click's own do
            _report(e.spelled(flag))
            code = EXIT_USAGE if e.usage else EXIT_ERROR
        elif isinstance(e, CharlstmError):
            from charlstm.errors import WriteFailed

            if not (isinstance(e, WriteFailed) and os.environ.get("RANK", "0") != "0"):  # rank 0 says it once
                _report(str(e))
            code = EXIT_ERROR
        else:
            _report(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
            code = EXIT_ERROR
    sys.exit(code)
