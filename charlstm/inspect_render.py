"""Drawing an inspect-gates report: on the terminal (rich), as tab-separated text for pipes,
as one self-contained HTML page, and as JSON / .npz files for notebooks.

Two views of the same replay: `gates` colours each character by what chosen units of one
gate or state do there (blue -1, white 0, red +1; gates 0 -> 1 map to blue -> red);
`surprise` colours each character by how unexpected it was to the model (white: 0 bits,
yellow, red: `SURPRISE_SCALE` bits or more) and shows the model's top guesses for it.
The HTML page holds both, and the saturation and unit-finder tables; it has no scripts
and reads nothing from the network.

Nothing here computes a statistic or chooses a unit: `inspect.gate_report` did that.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from charlstm import disk
from charlstm.errors import CharlstmError, SettingError
from charlstm.inspect import GateReport

VIEWS = ("gates", "surprise")
SURPRISE_SCALE = 8.0  # bits where the surprise colour is reddest: a character the model gave 1 in 256
MOST_SURPRISING = 10  # rows of the terminal's table of the most surprising characters


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise SettingError("view", f"must be {' or '.join(VIEWS)}, got {view!r}")
    return view


def display_value(quantity: str, values: Tensor, sigmoid_gates: tuple[str, ...]) -> Tensor:
    """One unit's values over time mapped to [-1, 1] for colour.

    Gates in [0, 1] (the cell's `sigmoid_gates`) map linearly. The cell state is unbounded,
    and a counting cell drifts to magnitudes where tanh shows one flat colour, so it is
    divided by its largest magnitude in the window instead: its shape over the text is what
    a reader looks for.
    """
    if quantity in sigmoid_gates:
        return values * 2 - 1
    if quantity == "cell":
        return values / values.abs().max().clamp_min(1e-6)
    return values.clamp(-1, 1)


def colour(v: float) -> tuple[int, int, int]:
    """A diverging blue (-1) -> white (0) -> red (+1) scale, as in Karpathy et al. 2015,
    kept light enough at the ends for black text to stay readable."""
    v = max(-1.0, min(1.0, v)) * 0.75
    fade = round(255 * (1 - abs(v)))
    return (255, fade, fade) if v >= 0 else (fade, fade, 255)


def surprise_colour(bits: float) -> tuple[int, int, int]:
    """White (0 bits: expected) -> yellow -> red (`SURPRISE_SCALE` bits or more), light
    enough for black text; grey for a character the model did not predict (the first)."""
    if math.isnan(bits):
        return (225, 225, 225)
    v = max(0.0, min(1.0, bits / SURPRISE_SCALE))
    stops = ((255, 255, 255), (255, 222, 110), (240, 96, 80))
    low, high, f = (stops[0], stops[1], v * 2) if v <= 0.5 else (stops[1], stops[2], v * 2 - 1)
    return tuple(round(a + (b - a) * f) for a, b in zip(low, high, strict=True))  # type: ignore[return-value]


def shown(ch: str) -> str:
    """A character as the views draw it: a visible mark for newline and tab."""
    return {"\n": "↵\n", "\t": "→", " ": " "}.get(ch, ch if ch.isprintable() else "·")


def _label(ch: str) -> str:
    """A character on its own, as a table or tooltip names it."""
    return {"\n": "↵", "\t": "→", " ": "␣"}.get(ch, ch if ch.isprintable() else repr(ch))


def _rgb(rgb: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*rgb)


# --- the terminal ----------------------------------------------------------------------


def terminal(report: GateReport, view: str = "gates") -> list[Any]:
    """What a person at a terminal sees first: a header and the coloured text."""
    from rich.text import Text

    inspection = report.inspection
    header = Text(report.source, style="bold")
    if view == "surprise":
        header.append(f", {len(inspection.text)} characters; {report.expected.bits_per_char:.3f} bits/char")
        return [header, _surprise_text(report)]
    header.append(f", {len(inspection.text)} characters; {inspection.cell} {report.quantity}")
    return [header, _gate_text(report)]


def _gate_text(report: GateReport):
    """For each chosen unit, the text with each character's background coloured by its value."""
    from rich.text import Text

    inspection, q = report.inspection, report.inspection.quantity_index(report.quantity)
    out = Text()
    for unit in report.units:
        values = display_value(report.quantity, inspection.values[:, report.layer, q, unit], inspection.sigmoid_gates)
        out.append(f"layer {report.layer} unit {unit} ({report.quantity})\n", style="bold")
        for ch, v in zip(inspection.kept_text, values.tolist(), strict=True):
            out.append(shown(ch), style=f"black on {_rgb(colour(v))}")
        out.append("\n\n")
    out.append("legend: ", style="bold")
    for v, label in ((-1.0, " -1 (0 for gates) "), (0.0, " 0 (0.5) "), (1.0, " +1 (1) ")):
        out.append(label, style=f"black on {_rgb(colour(v))}")
    out.append("\n")
    return out


def _surprise_text(report: GateReport):
    from rich.text import Text

    expected = report.expected
    out = Text()
    for ch, bits in zip(expected.text, expected.bits.tolist(), strict=True):
        out.append(shown(ch), style=f"black on {_rgb(surprise_colour(bits))}")
    out.append("\n\nlegend: ", style="bold")
    for bits in (0.0, SURPRISE_SCALE / 4, SURPRISE_SCALE / 2, 3 * SURPRISE_SCALE / 4, SURPRISE_SCALE):
        out.append(f" {bits:g} bits ", style=f"black on {_rgb(surprise_colour(bits))}")
    out.append(" (not predicted) ", style=f"black on {_rgb(surprise_colour(math.nan))}")
    out.append("\n")
    return out


def tables(report: GateReport, view: str = "gates") -> list[Any]:
    """The tables beside the view: saturation and unit finder (gates), or the most
    surprising characters with the model's guesses (surprise)."""
    from rich.table import Table

    if view == "surprise":
        return [_surprise_table(report)]
    shown_tables = []
    if report.saturation:
        steps = report.inspection.statistics.steps
        table = Table(title=f"Gate saturation over {steps} characters (< 0.1 left, > 0.9 right)")
        for column in ("layer", "gate", "mean left", "mean right", "units mostly left", "units mostly right"):
            table.add_column(column, justify="right")
        for r in report.saturation:
            table.add_row(
                str(r.layer),
                r.gate,
                f"{r.left:.3f}",
                f"{r.right:.3f}",
                f"{r.mostly_left}/{r.units}",
                f"{r.mostly_right}/{r.units}",
            )
        shown_tables.append(table)
    finder = Table(title="Unit finder: the unit that best tracks each feature (Pearson r)")
    for column in ("feature", "layer", "quantity", "unit", "r"):
        finder.add_column(column, justify="right")
    for f in report.finder:
        finder.add_row(f.feature, str(f.layer), f.quantity, str(f.unit), f"{f.r:+.3f}")
    return [*shown_tables, finder]


def most_surprising(report: GateReport, n: int = MOST_SURPRISING) -> list[int]:
    """Positions of the `n` most surprising characters shown, most surprising first."""
    bits = report.expected.bits.nan_to_num(-1.0)
    order = bits.argsort(descending=True, stable=True)[: min(n, len(bits))]
    return [int(t) for t in order if bits[t] >= 0]


def _surprise_table(report: GateReport):
    from rich.table import Table

    expected = report.expected
    table = Table(title=f"The {MOST_SURPRISING} most surprising characters, and what the model expected")
    for column, justify in (("pos", "right"), ("after", "right"), ("char", "center"), ("bits", "right")):
        table.add_column(column, justify=justify)
    table.add_column("top guesses", justify="left")
    for t in most_surprising(report):
        before = "".join(_label(ch) for ch in expected.text[max(0, t - 12) : t])
        guesses = "  ".join(f"{_label(ch)} {p:.0%}" for ch, p in expected.guesses(t))
        table.add_row(str(t), before, _label(expected.text[t]), f"{float(expected.bits[t]):.2f}", guesses)
    return table


# --- pipes -----------------------------------------------------------------------------


def _escaped(ch: str) -> str:
    return json.dumps(ch)[1:-1]


def plain(report: GateReport, view: str = "gates") -> str:
    """Tab-separated, for pipes and scripts. gates: position, character, one column per
    unit. surprise: position, character, probability, bits, then the top guesses and
    their probabilities (empty for the first character, which is not predicted)."""
    inspection = report.inspection
    if view == "surprise":
        expected = report.expected
        top = expected.guess_ids.shape[1]
        guess_columns = [name for k in range(1, top + 1) for name in (f"guess{k}", f"p{k}")]
        lines = ["\t".join(["pos", "char", "p", "bits", *guess_columns])]
        for t, ch in enumerate(expected.text):
            bits = float(expected.bits[t])
            if math.isnan(bits):
                lines.append("\t".join([str(t), _escaped(ch), *[""] * (2 + len(guess_columns))]))
                continue
            guesses = [cell for g, p in expected.guesses(t) for cell in (_escaped(g), f"{p:.4f}")]
            lines.append("\t".join([str(t), _escaped(ch), f"{2**-bits:.4f}", f"{bits:.3f}", *guesses]))
        return "\n".join(lines) + "\n"
    q = inspection.quantity_index(report.quantity)
    header = "\t".join(["pos", "char", *(f"L{report.layer}.{report.quantity}.{u}" for u in report.units)])
    lines = [header]
    columns = inspection.values[:, report.layer, q, report.units].tolist()
    for t, (ch, row) in enumerate(zip(inspection.kept_text, columns, strict=True)):
        lines.append("\t".join([str(t), _escaped(ch), *(f"{v:.4f}" for v in row)]))
    return "\n".join(lines) + "\n"


# --- the HTML page ---------------------------------------------------------------------


def _scatter_svg(report: GateReport, size: int = 320) -> str:
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    saturation = report.inspection.statistics.saturation()
    gates = sorted({gate for _, gate in saturation})
    pad = 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad + 100}" height="{size + 2 * pad}" '
        f'role="img" aria-label="gate saturation scatter">',
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad + size}" y2="{pad + size}" stroke="#ccc">'
        "<title>left + right = 1</title></line>",
        f'<text x="{pad + size / 2}" y="{size + pad + 30}" text-anchor="middle">'
        "fraction left-saturated (&lt; 0.1)</text>",
        f'<text x="12" y="{pad + size / 2}" transform="rotate(-90 12 {pad + size / 2})" text-anchor="middle">'
        "fraction right-saturated (&gt; 0.9)</text>",
    ]
    for (layer, gate), (low, high) in saturation.items():
        fill = palette[gates.index(gate) % len(palette)]
        for unit, (x, y) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
            parts.append(
                f'<circle cx="{pad + x * size:.1f}" cy="{pad + (1 - y) * size:.1f}" r="2.5" fill="{fill}" '
                f'fill-opacity="0.6"><title>layer {layer} {gate} unit {unit}: '
                f"left {x:.3f}, right {y:.3f}</title></circle>"
            )
    for i, gate in enumerate(gates):
        fill = palette[i % len(palette)]
        parts.append(f'<circle cx="{pad + size + 20}" cy="{pad + 12 + 16 * i}" r="5" fill="{fill}"/>')
        parts.append(f'<text x="{pad + size + 30}" y="{pad + 16 + 16 * i}">{gate}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _gate_sections(report: GateReport) -> str:
    inspection, q = report.inspection, report.inspection.quantity_index(report.quantity)
    sections = []
    for unit in report.units:
        raw = inspection.values[:, report.layer, q, unit]
        shown_values = display_value(report.quantity, raw, inspection.sigmoid_gates)
        spans = []
        for t, (ch, v, s) in enumerate(zip(inspection.kept_text, raw.tolist(), shown_values.tolist(), strict=True)):
            spans.append(
                f'<span style="background:{_rgb(colour(s))}" '
                f'title="#{t} {html.escape(repr(ch))}: {v:.4f}">{html.escape(shown(ch))}</span>'
            )
        sections.append(
            f'<h3>layer {report.layer}, unit {unit}: {report.quantity}</h3>\n<pre class="heat">{"".join(spans)}</pre>'
        )
    return "\n".join(sections)


def _surprise_section(report: GateReport) -> str:
    expected = report.expected
    spans = []
    for t, (ch, bits) in enumerate(zip(expected.text, expected.bits.tolist(), strict=True)):
        if math.isnan(bits):
            box = f"<b>#{t} {html.escape(_label(ch))}</b>\nthe first character: context, not predicted"
        else:
            lines = [f"<b>#{t} {html.escape(_label(ch))}: {bits:.2f} bits, p = {2**-bits:.3f}</b>", "expected:"]
            lines += [f"{html.escape(_label(g))}  {p:6.1%}" for g, p in expected.guesses(t)]
            box = "\n".join(lines)
        spans.append(
            f'<span class="s" style="background:{_rgb(surprise_colour(bits))}">'
            f'{html.escape(shown(ch))}<span class="guesses">{box}</span></span>'
        )
    legend = "".join(
        f'<span style="background:{_rgb(surprise_colour(b))}">&nbsp;{b:g} bits&nbsp;</span>'
        for b in (0.0, SURPRISE_SCALE / 4, SURPRISE_SCALE / 2, 3 * SURPRISE_SCALE / 4, SURPRISE_SCALE)
    )
    return f"""<h2 id="surprise">What the model expected</h2>
<p>Each character coloured by its surprise: -log<sub>2</sub> of the probability the model gave it,
having read the text before it. {expected.bits_per_char:.3f} bits/char over {expected.scored} characters.
Hover a character for the model's top guesses.</p>
<p class="legend">{legend}</p>
<pre class="surprise">{"".join(spans)}</pre>"""


def page(report: GateReport, title: str) -> str:
    """One self-contained page: heat-maps with exact values on hover, what the model expected
    with its guesses on hover, the saturation scatter plot and the unit-finder table."""
    inspection = report.inspection
    saturation = "".join(
        f"<tr><td>{r.layer}</td><td>{r.gate}</td><td>{r.left:.3f}</td><td>{r.right:.3f}</td>"
        f"<td>{r.mostly_left}</td><td>{r.mostly_right}</td></tr>"
        for r in report.saturation
    )
    finder = "".join(
        f"<tr><td>{f.feature}</td><td>{f.layer}</td><td>{f.quantity}</td><td>{f.unit}</td><td>{f.r:+.3f}</td></tr>"
        for f in report.finder
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
pre.heat, pre.surprise {{ font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.5; }}
pre.heat span, pre.surprise span.s {{ padding: 1px 0; }}
pre.surprise span.s {{ position: relative; }}
pre.surprise span.guesses {{ display: none; position: absolute; left: 0; top: 1.6em; z-index: 2;
  background: #fff; color: #222; border: 1px solid #999; border-radius: 4px; padding: 4px 8px;
  box-shadow: 0 2px 6px rgba(0,0,0,.25); white-space: pre; font-size: 90%; line-height: 1.4; }}
pre.surprise span.s:hover span.guesses {{ display: block; }}
pre.surprise span.s:hover {{ outline: 1px solid #333; }}
.legend span {{ font-family: ui-monospace, monospace; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{inspection.cell} model, {inspection.statistics.layers} layers x {inspection.statistics.units} units;
statistics over {inspection.statistics.steps} characters, heat-maps over the first {len(inspection.values)}.
Colour: blue -1 (gates: 0), white 0 (gates: 0.5), red +1 (gates: 1);
the cell state is scaled by its largest magnitude here.
Hover a character for its exact value.</p>
{_gate_sections(report)}
{_surprise_section(report)}
<h2>Gate saturation</h2>
<p>Fraction of time each unit's gate is left-saturated (&lt; 0.1) or right-saturated (&gt; 0.9),
as in Karpathy, Johnson &amp; Fei-Fei 2015.</p>
{_scatter_svg(report) if saturation else "<p>This cell has no gates.</p>"}
<table><tr><th>layer</th><th>gate</th><th>mean left</th><th>mean right</th><th>units mostly left</th>
<th>units mostly right</th></tr>{saturation}</table>
<h2>Unit finder</h2>
<p>The unit whose value correlates most strongly (Pearson r) with each text feature.</p>
<table><tr><th>feature</th><th>layer</th><th>quantity</th><th>unit</th><th>r</th></tr>{finder}</table>
</body>
</html>
"""


# --- files for notebooks ---------------------------------------------------------------


def numpy_for_npz():
    """numpy, or the error a user should see before any work is done."""
    try:
        import numpy
    except ImportError as e:
        raise CharlstmError("--npz needs numpy (pip install numpy); --json works without it") from e
    return numpy


def export_json(report: GateReport, path: Path) -> None:
    """The kept trace, and the bits and top guesses of each character (null for the first)."""
    inspection, expected = report.inspection, report.expected
    bits = [None if math.isnan(b) else b for b in expected.bits.tolist()]
    payload = {
        "text": inspection.kept_text,
        "cell": inspection.cell,
        "quantities": list(inspection.quantities),
        "shape": ["step", "layer", "quantity", "unit"],
        "values": inspection.values.tolist(),
        "bits": bits,
        "guesses": [expected.guesses(t) for t in range(len(expected.text))],
    }
    disk.write_user_file(path, json.dumps(payload).encode("utf-8"))


def export_npz(report: GateReport, path: Path) -> None:
    """The same trace as numpy arrays. numpy writes into the open file rather than to the
    path: it would add `.npz` to a name without it, and a path leaves half a file on failure."""
    inspection, expected = report.inspection, report.expected
    numpy = numpy_for_npz()

    def write(sink: disk.Sink) -> None:
        numpy.savez_compressed(
            _ZipTarget(sink),
            values=inspection.values.numpy(),
            text=inspection.kept_text,
            quantities=list(inspection.quantities),
            bits=expected.bits.numpy(),
            guess_ids=expected.guess_ids.numpy(),
            guess_probabilities=expected.guess_probabilities.numpy(),
            alphabet=expected.alphabet,
        )

    disk.write_user_file(path, write)


class _ZipTarget:
    """The temporary file as numpy's zip writer takes a file object: numpy tells one from a
    path by its `read`, which writing a zip never calls."""

    def __init__(self, sink: disk.Sink):
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def read(self, *_: Any) -> bytes:
        raise io.UnsupportedOperation("the export is being written, not read")


@dataclass(frozen=True)
class Outputs:
    """The files a report is written to; `check` refuses impossible ones before any work."""

    html: Path | None = None
    json: Path | None = None
    npz: Path | None = None

    @property
    def named(self) -> bool:
        """Whether any file (page or trace) was asked for."""
        return self.html is not None or self.exporting

    @property
    def exporting(self) -> bool:
        """Whether the raw trace is exported (then every character's values are kept)."""
        return self.json is not None or self.npz is not None

    def check(self) -> None:
        if self.npz is not None:
            numpy_for_npz()
        for path in (self.html, self.json, self.npz):
            if path is not None:
                disk.check_writable_path(path)

    def write(self, report: GateReport, title: str) -> Iterator[Path]:
        """Write each file asked for, whole or not at all (a failure is `WriteFailed`, and the
        file it would have replaced is kept), yielding its path once it is written."""
        writers = (
            (self.html, lambda path: disk.write_user_file(path, page(report, title).encode("utf-8"))),
            (self.json, lambda path: export_json(report, path)),
            (self.npz, lambda path: export_npz(report, path)),
        )
        for path, write in writers:
            if path is None:
                continue
            write(path)
            yield path
