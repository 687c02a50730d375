"""The commands that look at training runs: `runs` and `report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from charlstm.commands.app import Command, app
from charlstm.commands.options import console
from charlstm.history import DEFAULT_ROOT


@app.command(
    "runs",
    cls=Command,
    epilog="Examples:\n\n  charlstm runs\n\n  charlstm runs elsewhere/checkpoints\n\n"
    "  charlstm runs --json | jq -r '.[0].path'",
)
def list_runs(
    folder: Annotated[
        Path, typer.Argument(help="The folder holding the runs, or one run folder.", metavar="FOLDER")
    ] = DEFAULT_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, newest first.")] = False,
) -> None:
    """Every run, newest first: model, steps, time, best validation bits/char, status, a sparkline."""
    import json

    from charlstm import history, runs_table

    fresh = folder == DEFAULT_ROOT and not folder.exists()  # nothing trained here yet: not a mistake
    summaries = [] if fresh else [history.summary(run) for run in history.find_runs(folder)]
    if as_json:
        print(json.dumps(summaries, indent=1))
    elif not summaries:
        print(f"no runs under {folder}/ yet; start one with: charlstm train", file=sys.stderr)
    elif sys.stdout.isatty():
        console().print(runs_table.render_table(summaries))
    else:
        sys.stdout.write(runs_table.render_plain(summaries))


@app.command(
    "report",
    cls=Command,
    epilog="Examples:\n\n  charlstm report --html report.html\n\n"
    "  charlstm report checkpoints/lstm-run checkpoints/gru-run --html compare.html",
)
def report_page(
    html_path: Annotated[
        Path, typer.Option("--html", help="The page to write: one self-contained HTML file.", show_default=False)
    ],
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folders; several share each chart. Default: the newest run.", show_default=False, metavar="RUN"
        ),
    ] = None,
) -> None:
    """One page of loss curves, learning rate, samples and settings; several runs overlaid."""
    from charlstm.report import write_report

    drawn = write_report(runs or [], html_path)
    print(f"wrote {html_path}: {', '.join(run.name for run in drawn)}")
