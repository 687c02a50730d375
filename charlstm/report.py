"""`charlstm report`: one self-contained HTML page for one run or several side by side.

The page draws what a run folder recorded (see `history.py`): training and validation loss
in bits per character against step and against time trained, the learning rate, the samples
the trainer printed as a timeline, and the settings (rows that differ between runs marked).
Charts are inline SVG (`svg_chart.py`), with no script and nothing fetched, so the file
opens anywhere, offline, and can be mailed as it is. Hovering a point shows its numbers (SVG
<title>). No torch: the page needs only the JSON the trainer wrote.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from charlstm import disk, history
from charlstm.errors import CharlstmError
from charlstm.svg_chart import Series, clock, line_chart, time_ticks

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F3C8D", "#444444")
"""Okabe-Ito colours (told apart with colour-blindness too), one per run."""
MAX_RUNS = len(PALETTE)


# --- choosing the runs --------------------------------------------------------------------------


def load_runs(paths: Sequence[Path], root: Path = history.DEFAULT_ROOT) -> list[history.Run]:
    """The runs to draw: those named, or the most recently active under `root`. Each must have
    been evaluated at least once, or there is no curve to draw."""
    runs = [history.read_run(p) for p in dict.fromkeys(paths)] if paths else [history.newest_run(root)]
    if len(runs) > MAX_RUNS:
        raise CharlstmError(f"at most {MAX_RUNS} runs fit one report, got {len(runs)}")
    for run in runs:
        if not run.evaluations:
            every = run.train.get("eval_every")
            when = f" at step {every:,} (--eval-every)" if isinstance(every, int) else ""
            raise CharlstmError(f"run {run.path} has no evaluations yet; its first comes{when}: report it then")
    return runs


def write_report(paths: Sequence[Path], out: Path, root: Path = history.DEFAULT_ROOT) -> list[history.Run]:
    """Read the runs, render the page and write it to `out` (the folder must exist), whole or
    not at all: a page being rewritten while a browser reloads it is never seen half-written."""
    disk.check_writable_path(out)
    runs = load_runs(paths, root)
    page = render_html(runs)
    disk.write_user_file(out, page.encode("utf-8"))  # a failure is WriteFailed: one line, the old page kept
    return runs


def render_html(runs: list[history.Run], title: str | None = None) -> str:
    """The whole page as one string: styles inline, charts inline, no script, nothing fetched."""
    colours = {run.name: PALETTE[i] for i, run in enumerate(runs)}
    title = title or f"charlstm report: {runs[0].name if len(runs) == 1 else f'{len(runs)} runs compared'}"
    legend = [(f"{run.name} ({run.shape})" if run.shape else run.name, colours[run.name]) for run in runs]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1>",
        "<p>Loss in bits per character (lower is better): solid lines are the validation split, dashed lines the "
        "training batches. Hover a point for its numbers.</p></header>",
        _summary_table(runs, colours),
        '<section id="loss-by-step"><h2>Loss against step</h2>',
        line_chart(
            _loss_series(runs, colours, "step"),
            "step",
            "bits/char",
            legend,
            point_label=_loss_label("step"),
        ),
        "</section>",
        '<section id="loss-by-time"><h2>Loss against time trained</h2>',
        line_chart(
            _loss_series(runs, colours, "elapsed"),
            "time trained",
            "bits/char",
            legend,
            x_ticks=lambda low, high: time_ticks(high),
            x_format=clock,
            point_label=_loss_label("elapsed"),
        ),
        "</section>",
        '<section id="learning-rate"><h2>Learning rate</h2>',
        line_chart(
            _lr_series(runs, colours),
            "step",
            "learning rate",
            legend,
            y_format=lambda v: f"{v:.3g}",
            with_key=False,
            y_from_zero=True,
        ),
        "<p class='hint'>As recorded at each evaluation: warmup, then cosine decay over the step or time "
        "budget.</p></section>",
        _samples_section(runs, colours),
        _settings_section(runs, colours),
        "<footer>Written by charlstm report from each run folder's config.json, metrics.jsonl, "
        "samples.jsonl and status.json.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _loss_series(runs: list[history.Run], colours: dict[str, str], x: str) -> list[Series]:
    series = []
    for run in runs:
        train = [(e.get(x) or 0.0, e["train_bpc"]) for e in run.evaluations if e.get("train_bpc") is not None]
        val = [(e.get(x) or 0.0, e["val_bpc"]) for e in run.evaluations if e.get("val_bpc") is not None]
        series.append(Series(run.name, "training", colours[run.name], train, dashed=True))
        series.append(Series(run.name, "validation", colours[run.name], val))
    return series


def _loss_label(x: str) -> Callable[[Series, float, float], str]:
    def label(s: Series, xv: float, y: float) -> str:
        where = f"step {xv:,.0f}" if x == "step" else f"{history.format_duration(xv)} trained"
        return f"{s.run}: {s.kind} {y:.3f} bits/char at {where}"

    return label


def _lr_series(runs: list[history.Run], colours: dict[str, str]) -> list[Series]:
    return [
        Series(run.name, "lr", colours[run.name], [(e["step"], e["lr"]) for e in run.evaluations if e.get("lr")])
        for run in runs
    ]


def _summary_table(runs: list[history.Run], colours: dict[str, str]) -> str:
    rows = []
    notes = []
    for run in runs:
        state, note = history.state_of(run)
        s = history.summary(run, (state, note))
        best = f"{s['best_val_bpc']:.3f}" if s["best_val_bpc"] is not None else "no validation"
        cells = [
            f'<span class="swatch" style="background:{colours[run.name]}"></span>{html.escape(run.name)}',
            html.escape(run.corpus or "?"),
            html.escape(run.shape or "?"),
            history.format_count(run.parameters),
            f"{run.steps:,}",
            history.format_duration(run.elapsed),
            best,
            f'<span class="state {state}">{state}</span>',
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        notes += [f"{run.name}: {n}" for n in s["notes"]]
        if not run.has_samples_file:
            notes.append(f"{run.name}: no samples kept (a run from an older charlstm, or --sample-every 0)")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("run", "corpus", "model", "parameters", "steps", "time trained", "best val bits/char", "status")
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f'<section id="runs"><table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        + (f'<ul class="notes">{note_html}</ul>' if notes else "")
        + "</section>"
    )


def _samples_section(runs: list[history.Run], colours: dict[str, str]) -> str:
    columns = []
    for run in runs:
        by_step = {e["step"]: e for e in run.evaluations}
        items = []
        for sample in run.samples:
            when = [f"step {sample['step']:,}"]
            if isinstance(sample.get("elapsed"), int | float):
                when.append(f"{history.format_duration(sample['elapsed'])} trained")
            val = by_step.get(sample["step"], {}).get("val_bpc")
            if val is not None:
                when.append(f"val {val:.3f} bits/char")
            items.append(f'<li><div class="when">{" · ".join(when)}</div><pre>{html.escape(sample["text"])}</pre></li>')
        body = (
            f'<ol class="timeline">{"".join(items)}</ol>'
            if items
            else '<p class="hint">No samples kept for this run.</p>'
        )
        columns.append(
            f'<div class="run-samples" style="--run:{colours[run.name]}"><h3>'
            f'<span class="swatch" style="background:{colours[run.name]}"></span>{html.escape(run.name)}</h3>'
            f"{body}</div>"
        )
    return (
        '<section id="samples"><h2>Samples as training went on</h2>'
        "<p class='hint'>What the model wrote at each point (temperature 0.8), oldest first.</p>"
        f'<div class="sample-columns">{"".join(columns)}</div></section>'
    )


def _settings(run: history.Run) -> dict[str, str]:
    flat: dict[str, str] = {}
    for section in ("model", "train"):
        for key, value in (run.config.get(section) or {}).items():
            flat[f"{section}.{key}"] = _setting(value)
    for key, value in run.config.items():
        if key not in ("model", "train"):
            flat[key] = _setting(value)
    return flat


def _setting(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if value is None:
        return "-"
    return str(value)


def _settings_section(runs: list[history.Run], colours: dict[str, str]) -> str:
    settings = [_settings(run) for run in runs]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    head = "".join(
        f'<th><span class="swatch" style="background:{colours[r.name]}"></span>{html.escape(r.name)}</th>' for r in runs
    )
    rows = []
    for key in keys:
        values = [s.get(key, "") for s in settings]
        differs = len(runs) > 1 and len(set(values)) > 1
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        rows.append(f"<tr{' class=differs' if differs else ''}><th>{html.escape(key)}</th>{cells}</tr>")
    hint = " Rows that differ between the runs are marked." if len(runs) > 1 else ""
    return (
        f'<section id="settings"><h2>Settings</h2><p class="hint">From each run\'s config.json.{hint}</p>'
        f'<table class="settings"><thead><tr><th>setting</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></section>"
    )


STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d232a; background: #fff; max-width: 960px; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.45rem; margin: 0 0 .25rem; word-break: break-all; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #e3e6ea; padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: .5rem 0; word-break: break-all; }
header p, .hint { color: #5b6470; margin: .25rem 0 .75rem; font-size: .9rem; }
table { border-collapse: collapse; font-size: .88rem; }
.runs { width: 100%; margin-top: 1rem; }
.runs th, .runs td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6ea; }
.runs td:nth-child(-n+3) { white-space: nowrap; }
.runs td:nth-child(n+4):nth-child(-n+7) { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .45em;
          vertical-align: -.05em; }
.state { font-weight: 600; }
.state.finished { color: #1a7f37; } .state.running { color: #0969da; } .state.interrupted { color: #9a6700; }
.state.failed, .state.stopped { color: #cf222e; } .state.unknown { color: #5b6470; }
.notes { color: #5b6470; font-size: .85rem; margin: .5rem 0 0; padding-left: 1.2rem; }
svg.chart { width: 100%; height: auto; display: block; font-size: 12px; font-family: inherit; }
svg.chart text { fill: #3b434d; }
svg.chart .label { font-size: 13px; fill: #1d232a; }
svg.chart .grid line { stroke: #edf0f2; }
svg.chart .axis line { stroke: #8c959f; }
svg.chart .legend text { fill: #1d232a; font-size: 12.5px; }
svg.chart .legend-key line { stroke: #3b434d; stroke-width: 2; }
svg.chart circle:hover { stroke: #1d232a; stroke-width: 2; }
svg.chart .training { opacity: .6; }
.sample-columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1.5rem; }
.timeline { list-style: none; margin: 0; padding: 0 0 0 1.1rem; border-left: 3px solid var(--run); }
.timeline li { position: relative; margin: 0 0 1rem; }
.timeline li::before { content: ""; position: absolute; left: calc(-1.45rem - 3.5px); top: .35rem;
                       width: .7rem; height: .7rem; border-radius: 50%; background: var(--run);
                       border: 2px solid #fff; }
.when { font-weight: 600; font-size: .88rem; }
pre { margin: .3rem 0 0; padding: .6rem .75rem; background: #f6f8fa; border-radius: 6px; white-space: pre-wrap;
      word-break: break-word; font: 12.5px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.settings th, .settings td { text-align: left; padding: .2rem .7rem .2rem 0; border-bottom: 1px solid #f0f2f4;
                             vertical-align: top; word-break: break-word; }
.settings tbody th { font-weight: normal; color: #5b6470; white-space: nowrap; }
.settings tr.differs td { background: #fff4d6; font-weight: 600; }
footer { color: #8c959f; font-size: .8rem; margin: 2.5rem 0 1rem; }
"""
