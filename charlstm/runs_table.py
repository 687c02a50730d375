"""`charlstm runs`' table: one row a run, from `history.summary`, with a sparkline of its
validation curve; rich on a terminal, aligned ASCII columns for a pipe. Reading the run
folders is `history`'s job; this module only draws what it read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from charlstm.history import format_count, format_duration

BLOCKS = "▁▂▃▄▅▆▇█"
"""Sparkline levels on a terminal."""
PLAIN_LEVELS = "_.-:=+*#"
"""Sparkline levels when output is piped: ASCII that survives any locale and `grep`."""
SPARK_WIDTH = 24


def sparkline(values: Sequence[float], levels: str = BLOCKS, width: int = SPARK_WIDTH) -> str:
    """Values as one character each (averaged into `width` buckets when there are more), the
    lowest level for the smallest value."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:
        buckets = [values[i * len(values) // width : (i + 1) * len(values) // width] for i in range(width)]
        values = [sum(b) / len(b) for b in buckets]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return levels[len(levels) // 2] * len(values)
    top = len(levels) - 1
    return "".join(levels[int((v - low) / (high - low) * top + 0.5)] for v in values)


COLUMNS = ("run", "corpus", "model", "params", "steps", "time", "best val", "status", "val bits/char")


def table_rows(summaries: list[dict[str, Any]], levels: str) -> list[tuple[str, ...]]:
    rows = []
    for s in summaries:
        shape = f"{s['cell']} {s['layers']}x{s['hidden']}" if s["cell"] else "?"
        best = f"{s['best_val_bpc']:.3f}" if s["best_val_bpc"] is not None else "-"
        rows.append(
            (
                s["name"],
                s["corpus"] or "?",
                shape,
                format_count(s["parameters"]),
                f"{s['steps']:,}",
                format_duration(s["elapsed"]),
                best,
                s["state"],
                sparkline(s["val_bpc"], levels),
            )
        )
    return rows


def render_plain(summaries: list[dict[str, Any]]) -> str:
    """Aligned columns and ASCII only, for pipes; notes follow the table, one per line."""
    rows = [COLUMNS, *table_rows(summaries, PLAIN_LEVELS)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    right = {3, 4, 5, 6}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines + _note_lines(summaries)) + "\n"


def render_table(summaries: list[dict[str, Any]]):
    """A rich Table for a terminal, with a unicode sparkline; notes go in its caption. Cells are
    Text, never markup: a run or corpus name may hold brackets."""
    from rich.table import Table
    from rich.text import Text

    colours = {"running": "bold cyan", "finished": "green", "interrupted": "yellow", "failed": "red", "stopped": "red"}
    table = Table(box=None, show_edge=False, pad_edge=False, caption_justify="left", header_style="bold")
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="right" if i in (3, 4, 5, 6) else "left", no_wrap=i in (0, 8))
    for s, row in zip(summaries, table_rows(summaries, BLOCKS), strict=True):
        cells = [Text(c) for c in row]
        cells[7].stylize(colours.get(s["state"], "dim"))
        cells[8].stylize("cyan")
        table.add_row(*cells)
    notes = _note_lines(summaries)
    if notes:
        table.caption = Text("\n".join(notes), style="dim")
    return table


def _note_lines(summaries: list[dict[str, Any]]) -> list[str]:
    return [f"note: {s['name']}: {note}" for s in summaries for note in s["notes"]]
