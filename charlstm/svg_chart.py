"""Line charts as inline SVG, for `charlstm report`'s page: axes with round ticks (numbers,
or durations on a time axis), one path per series with a point per record whose <title> shows
its numbers on hover, and a legend that wraps at the chart's width. No script, no library,
nothing fetched, so a page holding them opens anywhere, offline. Colours and what a series
means are the caller's; the page's stylesheet (report.STYLE) styles the classes used here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

WIDTH, PLOT_HEIGHT = 860, 280
LEFT, RIGHT, TOP, BOTTOM = 74, 24, 16, 52
LEGEND_ROW = 22
CHAR_WIDTH = 7.0  # an estimate of the legend font's average width, to wrap legend rows


@dataclass
class Series:
    """One line: a run's colour, dashed for training loss, solid for validation."""

    run: str
    kind: str
    colour: str
    points: list[tuple[float, float]]
    dashed: bool = False


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high - low < 1e-12:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def time_ticks(high: float, target: int = 6) -> list[float]:
    """Ticks at round durations (10 s, 1 min, 5 min, 1 h, ...) from 0 to past `high`."""
    high = max(high, 1.0)
    step = next((s for s in TIME_STEPS if s * target >= high), TIME_STEPS[-1] * math.ceil(high / TIME_STEPS[-1] / 6))
    return [float(i * step) for i in range(math.ceil(high / step - 1e-9) + 1)]


def clock(seconds: float) -> str:
    """A tick label: '0', '30s', '5m', '1m30s', '2h', '1h30m'."""
    s = round(seconds)
    if s == 0:
        return "0"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60}s" if s % 60 else "")
    return f"{s // 3600}h" + (f"{s % 3600 // 60}m" if s % 3600 // 60 else "")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def line_chart(
    series: list[Series],
    x_label: str,
    y_label: str,
    legend: list[tuple[str, str]],
    x_ticks: Callable[[float, float], list[float]] = nice_ticks,
    x_format: Callable[[float], str] = _number,
    y_format: Callable[[float], str] = _number,
    point_label: Callable[[Series, float, float], str] | None = None,
    with_key: bool = True,
    y_from_zero: bool = False,
) -> str:
    """An SVG line chart: axes with ticks and labels, one path per series with a circle per
    point (its <title> shows on hover), and a legend beneath (runs by colour; line styles)."""
    points = [p for s in series for p in s.points]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_tick_values = x_ticks(min([*xs, 0.0]), max(xs, default=1.0))
    y_tick_values = nice_ticks(0.0 if y_from_zero else min(ys, default=0.0), max(ys, default=1.0))
    x0, x1 = x_tick_values[0], x_tick_values[-1]
    y0, y1 = y_tick_values[0], y_tick_values[-1]
    plot_w = WIDTH - LEFT - RIGHT

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w

    def sy(y: float) -> float:
        return TOP + PLOT_HEIGHT - (y - y0) / ((y1 - y0) or 1) * PLOT_HEIGHT

    items = list(legend)
    if with_key:
        items += [("validation", "key-solid"), ("training", "key-dashed")]
    rows = _legend_rows([label for label, _ in items])
    height = TOP + PLOT_HEIGHT + BOTTOM + LEGEND_ROW * (max(rows) + 1 if rows else 0) + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" class="chart" role="img" '
        f'aria-label="{html.escape(y_label)} against {html.escape(x_label)}">'
    ]
    bottom = TOP + PLOT_HEIGHT
    out.append('<g class="grid">')
    for t in y_tick_values:
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
    out.append("</g>")
    out.append('<g class="axis x-axis">')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}"/>')
    for t in x_tick_values:
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{bottom}" y2="{bottom + 5}"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 19}" text-anchor="middle">{html.escape(x_format(t))}</text>')
    out.append(
        f'<text class="label" x="{LEFT + plot_w / 2:.1f}" y="{bottom + 42}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    out.append("</g>")
    out.append('<g class="axis y-axis">')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}"/>')
    for t in y_tick_values:
        out.append(f'<line x1="{LEFT - 5}" x2="{LEFT}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
        out.append(f'<text x="{LEFT - 9}" y="{sy(t) + 4:.1f}" text-anchor="end">{html.escape(y_format(t))}</text>')
    mid = TOP + PLOT_HEIGHT / 2
    out.append(
        f'<text class="label" x="16" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 16 {mid:.1f})">'
        f"{html.escape(y_label)}</text>"
    )
    out.append("</g>")
    for s in series:
        if not s.points:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s.points))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        width = 1.5 if s.dashed else 2.2
        out.append(
            f'<path class="curve {s.kind}" data-run="{html.escape(s.run)}" d="{d}" fill="none" '
            f'stroke="{s.colour}" stroke-width="{width}"{dash} stroke-linejoin="round"/>'
        )
        radius = 2.4 if s.dashed else 3.4
        out.append(f'<g class="points {s.kind}" fill="{s.colour}">')
        for x, y in s.points:
            title = point_label(s, x, y) if point_label else f"{s.run}: {x_format(x)}, {y_format(y)}"
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{radius}"><title>{html.escape(title)}</title></circle>'
            )
        out.append("</g>")
    out.append(_legend(items, rows, bottom + BOTTOM))
    out.append("</svg>")
    return "\n".join(out)


def _legend_rows(labels: list[str]) -> list[int]:
    """The row of each legend item, wrapping at the chart's width."""
    rows, row, x = [], 0, LEFT
    for label in labels:
        width = 34 + CHAR_WIDTH * len(label) + 20
        if x + width > WIDTH - RIGHT and x > LEFT:
            row, x = row + 1, LEFT
        rows.append(row)
        x += width
    return rows


def _legend(items: list[tuple[str, str]], rows: list[int], top: float) -> str:
    out = ['<g class="legend">']
    x, current = LEFT, 0
    for (label, colour), row in zip(items, rows, strict=True):
        if row != current:
            x, current = LEFT, row
        y = top + row * LEGEND_ROW + 8
        if colour.startswith("key-"):
            dash = ' stroke-dasharray="6 4"' if colour == "key-dashed" else ""
            out.append(f'<g class="legend-key"><line x1="{x}" x2="{x + 26}" y1="{y}" y2="{y}"{dash}/>')
        else:
            out.append(
                f'<g class="legend-item"><rect x="{x}" y="{y - 5}" width="26" height="10" rx="2" fill="{colour}"/>'
            )
        out.append(f'<text x="{x + 34}" y="{y + 4}">{html.escape(label)}</text></g>')
        x += 34 + CHAR_WIDTH * len(label) + 20
    out.append("</g>")
    return "\n".join(out)
