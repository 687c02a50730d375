"""What the gates do: traces, saturation statistics, a unit finder, and three views.

A trace replays a trained model's exact weights through the explicit cells of
`cells.py`, one character at a time, and records every gate and state of every unit:
values[step, layer, quantity, unit], where the quantities are the cell's gate names
followed by its state names (for an LSTM: input, forget, candidate, output, hidden,
cell; for a GRU: reset, update, new, hidden; for a plain RNN: hidden).

Long texts stream: statistics are accumulated chunk by chunk and only a bounded window
of raw values is kept (all of it only when the caller asks to export it), so 100k
characters need no more memory than 2k.

Views: `render_terminal` (a rich Text, one coloured row per unit), `render_plain`
(tab-separated values for pipes), `render_html` (one self-contained file), and
`export_json` / `export_npz` for notebooks.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, Stepper
from charlstm.tokenizer import Vocabulary

CHUNK = 1024
SIGMOID_GATES = {"input", "forget", "output", "reset", "update"}
LOW, HIGH = 0.1, 0.9
FEATURES = (
    "inside_quotes",
    "inside_brackets",
    "bracket_depth",
    "position_in_line",
    "after_newline",
    "indentation",
    "is_letter",
    "is_space",
    "is_uppercase",
)


def quantities_of(model: CharLSTM) -> tuple[str, ...]:
    """What a trace records per unit for this model's cell: its gates, then its state."""
    return model.kind.quantities


def text_features(text: str) -> Tensor:
    """Simple properties of the text at each character (after reading it): (steps, features)."""
    rows = []
    in_quotes, depth, column, indent, indenting = False, 0, 0, 0, True
    for ch in text:
        if ch == '"':
            in_quotes = not in_quotes
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        if ch == "\n":
            column, indent, indenting = 0, 0, True
        else:
            column += 1
            if indenting and ch == " ":
                indent += 1
            else:
                indenting = False
        rows.append((in_quotes, depth > 0, depth, column, ch == "\n", indent, ch.isalpha(), ch.isspace(), ch.isupper()))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(text), len(FEATURES))


def replay(model: CharLSTM, vocabulary: Vocabulary, text: str, chunk: int = CHUNK) -> Iterator[Tensor]:
    """Chunks of values (steps, layers, quantities, units), in float32, over the whole text."""
    stepper = Stepper(model)
    state = stepper.initial_state()
    ids = vocabulary.encode(text).long()
    layers, units = model.config.layers, model.config.hidden
    n_quantities = len(quantities_of(model))
    with torch.inference_mode():
        for start in range(0, len(ids), chunk):
            block = ids[start : start + chunk]
            values = torch.empty(len(block), layers, n_quantities, units)
            for t in range(len(block)):
                _, state, gates = stepper.step(block[t : t + 1], state)
                for k in range(layers):
                    values[t, k] = torch.cat([*gates[k], *state[k]])
            yield values


@dataclass
class Statistics:
    """Running sums over every step: saturation counts and moments for correlations."""

    quantities: tuple[str, ...]
    layers: int
    units: int
    steps: int = 0
    low: Tensor = field(init=False)
    high: Tensor = field(init=False)
    sum_x: Tensor = field(init=False)
    sum_xx: Tensor = field(init=False)
    sum_f: Tensor = field(init=False)
    sum_ff: Tensor = field(init=False)
    sum_fx: Tensor = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.layers, len(self.quantities), self.units)
        self.low, self.high = torch.zeros(shape), torch.zeros(shape)
        self.sum_x = torch.zeros(shape, dtype=torch.float64)
        self.sum_xx = torch.zeros(shape, dtype=torch.float64)
        self.sum_f = torch.zeros(len(FEATURES), dtype=torch.float64)
        self.sum_ff = torch.zeros(len(FEATURES), dtype=torch.float64)
        self.sum_fx = torch.zeros((len(FEATURES), *shape), dtype=torch.float64)

    def add(self, values: Tensor, features: Tensor) -> None:
        self.steps += len(values)
        self.low += (values < LOW).sum(0)
        self.high += (values > HIGH).sum(0)
        x = values.double()
        self.sum_x += x.sum(0)
        self.sum_xx += (x * x).sum(0)
        self.sum_f += features.sum(0)
        self.sum_ff += (features * features).sum(0)
        self.sum_fx += torch.einsum("tf,tlqu->flqu", features, x)

    def saturation(self) -> dict[tuple[int, str], tuple[Tensor, Tensor]]:
        """Per (layer, sigmoid gate): fraction of steps each unit is < 0.1 and > 0.9."""
        result = {}
        for q, name in enumerate(self.quantities):
            if name in SIGMOID_GATES:
                for k in range(self.layers):
                    result[(k, name)] = (self.low[k, q] / self.steps, self.high[k, q] / self.steps)
        return result

    def feature_is_constant(self, f: int) -> bool:
        n = self.steps
        return bool(self.sum_ff[f] / n - (self.sum_f[f] / n) ** 2 <= 1e-12)

    def correlations(self) -> Tensor:
        """Pearson r of every unit's every quantity with every feature: (features, layers, quantities, units)."""
        n = self.steps
        cov = self.sum_fx / n - (self.sum_f / n)[:, None, None, None] * (self.sum_x / n)[None]
        var_x = (self.sum_xx / n - (self.sum_x / n) ** 2).clamp_min(0)
        var_f = (self.sum_ff / n - (self.sum_f / n) ** 2).clamp_min(0)
        denominator = (var_f[:, None, None, None] * var_x[None]).sqrt()
        return torch.where(denominator > 1e-12, cov / denominator.clamp_min(1e-30), torch.zeros_like(cov))


@dataclass(frozen=True)
class Finding:
    feature: str
    layer: int
    quantity: str
    unit: int
    r: float


@dataclass
class Inspection:
    """The result of replaying a text: kept raw values plus statistics over all of it."""

    text: str
    cell: str
    quantities: tuple[str, ...]
    values: Tensor
    statistics: Statistics

    @property
    def kept_text(self) -> str:
        return self.text[: len(self.values)]

    def quantity_index(self, name: str) -> int:
        if name not in self.quantities:
            raise CharlstmError(f"a {self.cell} model has no {name!r}; choose one of {', '.join(self.quantities)}")
        return self.quantities.index(name)

    def _findings(self, quantity: str) -> list[Finding]:
        """Every unit of `quantity`, paired with the feature it tracks best."""
        r = self.statistics.correlations()[:, :, self.quantity_index(quantity)]
        best_feature = r.abs().argmax(0)
        findings = []
        for layer in range(self.statistics.layers):
            for unit in range(self.statistics.units):
                f = int(best_feature[layer, unit])
                findings.append(Finding(FEATURES[f], layer, quantity, unit, float(r[f, layer, unit])))
        return findings

    def strongest_units(self, quantity: str, layer: int | None = None, n: int = 3) -> list[Finding]:
        """The `n` units of `quantity` (in `layer`, or in any) that track some feature best."""
        findings = [f for f in self._findings(quantity) if layer is None or f.layer == layer]
        return sorted(findings, key=lambda f: -abs(f.r))[:n]

    def best_per_feature(self) -> list[Finding]:
        """For each text feature that varies in the text, the cell or hidden unit that tracks
        it best, strongest first."""
        r = self.statistics.correlations()
        best = []
        for f, feature in enumerate(FEATURES):
            if self.statistics.feature_is_constant(f):
                continue
            candidates = []
            for name in ("cell", "hidden"):
                if name in self.quantities:
                    q = self.quantities.index(name)
                    index = int(r[f, :, q].abs().flatten().argmax())
                    layer, unit = divmod(index, self.statistics.units)
                    candidates.append(Finding(feature, layer, name, unit, float(r[f, layer, q, unit])))
            best.append(max(candidates, key=lambda x: abs(x.r)))
        return sorted(best, key=lambda x: -abs(x.r))


def inspect_text(model: CharLSTM, vocabulary: Vocabulary, text: str, keep: int | None = 2000) -> Inspection:
    """Replay `text`; keep raw values for the first `keep` characters (None: all)."""
    if not text:
        raise CharlstmError("there is no text to inspect")
    vocabulary.check(text, "the text to inspect")
    quantities = quantities_of(model)
    statistics = Statistics(quantities, model.config.layers, model.config.hidden)
    features = text_features(text)
    kept: list[Tensor] = []
    kept_steps = 0
    limit = len(text) if keep is None else min(keep, len(text))
    position = 0
    for values in replay(model, vocabulary, text):
        statistics.add(values, features[position : position + len(values)])
        position += len(values)
        if kept_steps < limit:
            kept.append(values[: limit - kept_steps].clone())
            kept_steps += len(kept[-1])
    return Inspection(text, model.config.cell, quantities, torch.cat(kept), statistics)


def display_value(quantity: str, values: Tensor) -> Tensor:
    """One unit's values over time mapped to [-1, 1] for colour.

    Gates map [0, 1] linearly. The cell state is unbounded, and a counting cell drifts to
    magnitudes where tanh shows one flat colour, so it is divided by its largest magnitude
    in the window instead: its shape over the text is what a reader looks for.
    """
    if quantity in SIGMOID_GATES:
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


def _shown(ch: str) -> str:
    return {"\n": "↵\n", "\t": "→", " ": " "}.get(ch, ch if ch.isprintable() else "·")


def render_terminal(inspection: Inspection, layer: int, quantity: str, units: list[int]):
    """A rich Text: for each unit, the text with each character's background coloured."""
    from rich.text import Text

    q = inspection.quantity_index(quantity)
    out = Text()
    for unit in units:
        shown = display_value(quantity, inspection.values[:, layer, q, unit])
        out.append(f"layer {layer} unit {unit} ({quantity})\n", style="bold")
        for ch, v in zip(inspection.kept_text, shown.tolist(), strict=True):
            r, g, b = colour(v)
            out.append(_shown(ch), style=f"black on rgb({r},{g},{b})")
        out.append("\n\n")
    out.append("legend: ", style="bold")
    for v, label in ((-1.0, " -1 (0 for gates) "), (0.0, " 0 (0.5) "), (1.0, " +1 (1) ")):
        r, g, b = colour(v)
        out.append(label, style=f"black on rgb({r},{g},{b})")
    out.append("\n")
    return out


def render_plain(inspection: Inspection, layer: int, quantity: str, units: list[int]) -> str:
    """Tab-separated: position, character, one column per unit; for pipes and scripts."""
    q = inspection.quantity_index(quantity)
    header = "\t".join(["pos", "char", *(f"L{layer}.{quantity}.{u}" for u in units)])
    lines = [header]
    columns = inspection.values[:, layer, q, units].tolist()
    for t, (ch, row) in enumerate(zip(inspection.kept_text, columns, strict=True)):
        lines.append("\t".join([str(t), json.dumps(ch)[1:-1], *(f"{v:.4f}" for v in row)]))
    return "\n".join(lines) + "\n"


def saturation_rows(inspection: Inspection) -> list[dict]:
    rows = []
    for (layer, gate), (low, high) in inspection.statistics.saturation().items():
        rows.append(
            {
                "layer": layer,
                "gate": gate,
                "left_saturated": round(float(low.mean()), 4),
                "right_saturated": round(float(high.mean()), 4),
                "units_mostly_left": int((low > 0.5).sum()),
                "units_mostly_right": int((high > 0.5).sum()),
                "units": len(low),
            }
        )
    return rows


def export_json(inspection: Inspection, path: Path) -> None:
    payload = {
        "text": inspection.kept_text,
        "cell": inspection.cell,
        "quantities": list(inspection.quantities),
        "shape": ["step", "layer", "quantity", "unit"],
        "values": inspection.values.tolist(),
    }
    path.write_text(json.dumps(payload))


def numpy_for_npz():
    """numpy, or the error a user should see before any work is done."""
    try:
        import numpy
    except ImportError as e:
        raise CharlstmError("--npz needs numpy (pip install numpy); --json works without it") from e
    return numpy


def export_npz(inspection: Inspection, path: Path) -> None:
    numpy_for_npz().savez_compressed(
        path,
        values=inspection.values.numpy(),
        text=inspection.kept_text,
        quantities=list(inspection.quantities),
    )


def _scatter_svg(inspection: Inspection, size: int = 320) -> str:
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    gates = sorted({gate for _, gate in inspection.statistics.saturation()})
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
    for (layer, gate), (low, high) in inspection.statistics.saturation().items():
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


def render_html(inspection: Inspection, layer: int, quantity: str, units: list[int], title: str) -> str:
    """One self-contained page: heat-maps with exact values on hover, the saturation
    scatter plot and the unit-finder table. No scripts, no network."""
    q = inspection.quantity_index(quantity)
    sections = []
    for unit in units:
        raw = inspection.values[:, layer, q, unit].tolist()
        shown = display_value(quantity, inspection.values[:, layer, q, unit]).tolist()
        spans = []
        for t, (ch, v, s) in enumerate(zip(inspection.kept_text, raw, shown, strict=True)):
            r, g, b = colour(s)
            label = html.escape(_shown(ch))
            spans.append(
                f'<span style="background:rgb({r},{g},{b})" '
                f'title="#{t} {html.escape(repr(ch))}: {v:.4f}">{label}</span>'
            )
        sections.append(f'<h3>layer {layer}, unit {unit}: {quantity}</h3>\n<pre class="heat">{"".join(spans)}</pre>')
    saturation = "".join(
        f"<tr><td>{r['layer']}</td><td>{r['gate']}</td><td>{r['left_saturated']:.3f}</td>"
        f"<td>{r['right_saturated']:.3f}</td><td>{r['units_mostly_left']}</td><td>{r['units_mostly_right']}</td></tr>"
        for r in saturation_rows(inspection)
    )
    finder = "".join(
        f"<tr><td>{f.feature}</td><td>{f.layer}</td><td>{f.quantity}</td><td>{f.unit}</td><td>{f.r:+.3f}</td></tr>"
        for f in inspection.best_per_feature()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
pre.heat {{ font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.5; }}
pre.heat span {{ padding: 1px 0; }}
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
{chr(10).join(sections)}
<h2>Gate saturation</h2>
<p>Fraction of time each unit's gate is left-saturated (&lt; 0.1) or right-saturated (&gt; 0.9),
as in Karpathy, Johnson &amp; Fei-Fei 2015.</p>
{_scatter_svg(inspection) if saturation else "<p>This cell has no gates.</p>"}
<table><tr><th>layer</th><th>gate</th><th>mean left</th><th>mean right</th><th>units mostly left</th>
<th>units mostly right</th></tr>{saturation}</table>
<h2>Unit finder</h2>
<p>The unit whose value correlates most strongly (Pearson r) with each text feature.</p>
<table><tr><th>feature</th><th>layer</th><th>quantity</th><th>unit</th><th>r</th></tr>{finder}</table>
</body>
</html>
"""
