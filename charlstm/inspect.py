"""What the gates do, and what the model expected: traces, statistics, a unit finder.

A trace replays a trained model's exact weights through the explicit cells of
`cells.py`, one character at a time, and records every gate and state of every unit:
values[step, layer, quantity, unit], where the quantities are the cell's gate names
followed by its state names (for an LSTM: input, forget, candidate, output, hidden,
cell; for a GRU: reset, update, new, hidden; for a plain RNN: hidden). The same replay
gives the model's prediction before each character: the probability it gave the
character that came, its surprise in bits, and its top guesses (`Expectations`).

Long texts stream: statistics are accumulated chunk by chunk and only a bounded window
of raw values is kept (all of it only when the caller asks to export it), so 100k
characters need no more memory than 2k.

`gate_report` (and `inspect_gates`, which also loads the checkpoint and picks the passage)
is what `charlstm inspect-gates` shows: the trace, the layer, quantity and units chosen,
and the table rows. Drawing it is `inspect_render`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from charlstm import checkpoint
from charlstm.config import InspectConfig, SamplingConfig, TrainConfig, flag
from charlstm.corpus import read_text
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, Stepper
from charlstm.tokenizer import Vocabulary

CHUNK = 1024
TOP_GUESSES = 5
PASSAGE_TEMPERATURE = 0.8  # the default passage, when the run's corpus is not at hand
DEFAULTS = InspectConfig()
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


def replay(model: CharLSTM, vocabulary: Vocabulary, text: str, chunk: int = CHUNK) -> Iterator[tuple[Tensor, Tensor]]:
    """Chunks over the whole text: values (steps, layers, quantities, units) in float32,
    and the logits after each character (steps, vocabulary): the model's guess at the next."""
    stepper = Stepper(model)
    state = stepper.initial_state()
    ids = vocabulary.encode(text).long()
    layers, units = model.config.layers, model.config.hidden
    n_quantities = len(quantities_of(model))
    with torch.inference_mode():
        for start in range(0, len(ids), chunk):
            block = ids[start : start + chunk]
            values = torch.empty(len(block), layers, n_quantities, units)
            logits = torch.empty(len(block), len(vocabulary))
            for t in range(len(block)):
                logits[t], state, gates = stepper.step(block[t : t + 1], state)
                for k in range(layers):
                    values[t, k] = torch.cat([*gates[k], *state[k]])
            yield values, logits


@dataclass
class Statistics:
    """Running sums over every step: saturation counts and moments for correlations.
    `sigmoid_gates` are the cell's gates in [0, 1] (cells.py), whose saturation is counted."""

    quantities: tuple[str, ...]
    layers: int
    units: int
    sigmoid_gates: tuple[str, ...]
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
            if name in self.sigmoid_gates:
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
class Expectations:
    """What the model expected at each character of `text`, having read the ones before it.

    bits[t] = -log2 p(text[t] | text[:t]), the surprise; guess_ids[t] and guess_probabilities[t]
    are its `TOP_GUESSES` likeliest characters for position t, likeliest first (ids into
    `alphabet`). Position 0 is context, not predicted: its bits are NaN, its guesses -1 and NaN.
    `total_bits` and `scored` cover the whole text replayed, which may run past `text`.
    """

    text: str
    alphabet: str
    bits: Tensor
    guess_ids: Tensor
    guess_probabilities: Tensor
    total_bits: float
    scored: int

    @property
    def probability(self) -> Tensor:
        """p(text[t] | text[:t]) for each position (NaN at 0)."""
        return torch.exp2(-self.bits)

    @property
    def bits_per_char(self) -> float:
        """Mean surprise over every scored character of the replayed text (`charlstm eval`'s figure)."""
        return self.total_bits / self.scored if self.scored else math.nan

    def guesses(self, t: int) -> list[tuple[str, float]]:
        """The likeliest characters for position t, with their probabilities; none at 0."""
        pairs = zip(self.guess_ids[t].tolist(), self.guess_probabilities[t].tolist(), strict=True)
        return [(self.alphabet[i], p) for i, p in pairs if i >= 0]


class _Expecting:
    """Collects `Expectations` chunk by chunk: every character's bits count towards the
    total, only the first `keep` characters are kept."""

    def __init__(self, ids: Tensor, keep: int, top: int):
        self.ids, self.keep, self.top = ids, keep, top
        self.bits = torch.full((keep,), math.nan)
        self.guess_ids = torch.full((keep, top), -1, dtype=torch.long)
        self.guess_probabilities = torch.full((keep, top), math.nan)
        self.total_bits = 0.0

    def add(self, start: int, logits: Tensor) -> None:
        """`logits` after the characters at start, start+1, ...: predictions for the ones after them."""
        targets = self.ids[start + 1 : start + 1 + len(logits)]
        log_probs = torch.log_softmax(logits[: len(targets)].float(), dim=1)
        bits = -log_probs.gather(1, targets[:, None]).squeeze(1) / math.log(2)
        self.total_bits += float(bits.double().sum())
        kept = slice(start + 1, min(start + 1 + len(targets), self.keep))
        n = max(kept.stop - kept.start, 0)
        if n:
            self.bits[kept] = bits[:n]
            probabilities, ids = log_probs[:n].exp().topk(self.top, dim=1)
            self.guess_ids[kept], self.guess_probabilities[kept] = ids, probabilities

    def result(self, text: str, alphabet: str) -> Expectations:
        scored = max(len(self.ids) - 1, 0)
        return Expectations(
            text[: self.keep], alphabet, self.bits, self.guess_ids, self.guess_probabilities, self.total_bits, scored
        )


@dataclass
class Inspection:
    """The result of replaying a text: kept raw values plus statistics over all of it."""

    text: str
    cell: str
    quantities: tuple[str, ...]
    values: Tensor
    statistics: Statistics
    expected: Expectations | None = None

    @property
    def kept_text(self) -> str:
        return self.text[: len(self.values)]

    @property
    def sigmoid_gates(self) -> tuple[str, ...]:
        return self.statistics.sigmoid_gates

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
    """Replay `text`; keep raw values and expectations for the first `keep` characters (None: all)."""
    if not text:
        raise CharlstmError("there is no text to inspect")
    vocabulary.check(text, "the text to inspect")
    quantities = quantities_of(model)
    statistics = Statistics(quantities, model.config.layers, model.config.hidden, model.kind.sigmoid_gates)
    features = text_features(text)
    limit = len(text) if keep is None else min(keep, len(text))
    expecting = _Expecting(vocabulary.encode(text).long(), limit, min(TOP_GUESSES, len(vocabulary)))
    kept: list[Tensor] = []
    kept_steps = 0
    position = 0
    for values, logits in replay(model, vocabulary, text):
        statistics.add(values, features[position : position + len(values)])
        expecting.add(position, logits)
        position += len(values)
        if kept_steps < limit:
            kept.append(values[: limit - kept_steps].clone())
            kept_steps += len(kept[-1])
    expected = expecting.result(text, vocabulary.chars)
    return Inspection(text, model.config.cell, quantities, torch.cat(kept), statistics, expected)


def expectations(model: CharLSTM, vocabulary: Vocabulary, text: str) -> Expectations:
    """What the model expected at every character of `text`: bits and top guesses (see `Expectations`)."""
    expected = inspect_text(model, vocabulary, text, keep=None).expected
    assert expected is not None
    return expected


@dataclass(frozen=True)
class SaturationRow:
    """One (layer, sigmoid gate): the mean fraction of time its units are left-saturated
    (< LOW) and right-saturated (> HIGH), and how many units are so more than half the time."""

    layer: int
    gate: str
    left: float
    right: float
    mostly_left: int
    mostly_right: int
    units: int


def saturation_rows(inspection: Inspection) -> list[SaturationRow]:
    rows = []
    for (layer, gate), (low, high) in inspection.statistics.saturation().items():
        left, right = float(low.mean()), float(high.mean())
        rows.append(SaturationRow(layer, gate, left, right, int((low > 0.5).sum()), int((high > 0.5).sum()), len(low)))
    return rows


def default_passage(
    train_config: TrainConfig | None, model: CharLSTM, vocabulary: Vocabulary, length: int, seed: int
) -> tuple[str, str]:
    """A validation excerpt of `length` characters when the run's corpus is at hand (so the
    text is one the model did not train on), else a passage the model writes; and what it is."""
    from charlstm.data import load_data
    from charlstm.sample import default_prime, generate

    if train_config is not None:
        try:
            data = load_data(train_config, vocabulary)
            excerpt = vocabulary.decode(data.val[:length])
            if len(excerpt) >= min(length, 200):
                return excerpt, f"validation excerpt of {train_config.corpus or 'the default corpus'}"
        except CharlstmError:
            pass
    prime = default_prime(vocabulary)
    config = SamplingConfig(PASSAGE_TEMPERATURE)
    text = prime + "".join(generate(model, vocabulary, prime, length - len(prime), config, seed))
    return text, f"a passage the model wrote (temperature {PASSAGE_TEMPERATURE:g})"


def check_view(model: CharLSTM, gate: str | None, layer: int | None, units: Sequence[int] | None) -> str:
    """The quantity to show (`gate`, by default the cell state where the cell has one, else
    the hidden state), once `gate`, `layer` and `units` are known to exist in this model."""
    quantities = quantities_of(model)
    quantity = gate or ("cell" if "cell" in quantities else "hidden")
    if quantity not in quantities:
        raise CharlstmError(f"a {model.config.cell} model has no {quantity!r}; choose one of {', '.join(quantities)}")
    layers, width = model.config.layers, model.config.hidden
    if layer is not None and not 0 <= layer < layers:
        raise CharlstmError(f"{flag('layer')} must be in 0..{layers - 1}, got {layer}")
    bad = [u for u in units or () if not 0 <= u < width]
    if bad:
        raise CharlstmError(f"{flag('unit')} must be in 0..{width - 1}, got {bad[0]}")
    return quantity


@dataclass
class GateReport:
    """What `charlstm inspect-gates` shows: the inspection, where its text came from, the
    layer, quantity and units chosen, and the rows of its saturation and unit-finder tables."""

    inspection: Inspection
    source: str
    layer: int
    quantity: str
    units: list[int]
    saturation: list[SaturationRow] = field(default_factory=list)
    finder: list[Finding] = field(default_factory=list)

    @property
    def expected(self) -> Expectations:
        assert self.inspection.expected is not None
        return self.inspection.expected


def gate_report(
    model: CharLSTM,
    vocabulary: Vocabulary,
    text: str,
    source: str,
    config: InspectConfig = DEFAULTS,
    layer: int | None = None,
    units: Sequence[int] | None = None,
    keep_all: bool = False,
) -> GateReport:
    """Replay `text` and choose what to show: the units given (in `layer`, by default 0), or
    the three of `config.gate` that best track a text feature (in `layer`, by default the
    strongest unit's). Views keep `config.show` characters (0, or `keep_all`: every one)."""
    quantity = check_view(model, config.gate, layer, units)
    keep = None if keep_all or config.show == 0 else config.show
    inspection = inspect_text(model, vocabulary, text, keep=keep)
    if units:
        chosen, layer = list(units), layer if layer is not None else 0
    else:
        if layer is None:
            layer = inspection.strongest_units(quantity, n=1)[0].layer
        chosen = [f.unit for f in inspection.strongest_units(quantity, layer)]
    return GateReport(
        inspection, source, layer, quantity, chosen, saturation_rows(inspection), inspection.best_per_feature()
    )


def inspect_gates(
    checkpoint_path: str | Path | None,
    config: InspectConfig = DEFAULTS,
    text: str | None = None,
    file: Path | None = None,
    layer: int | None = None,
    units: Sequence[int] | None = None,
    skip_unknown: bool = False,
    keep_all: bool = False,
) -> GateReport:
    """`charlstm inspect-gates`: load a checkpoint (a file, a run folder, None for the newest
    run), take `text`, the text of `file`, or else the default passage (`config.length`
    characters), and make its `gate_report`."""
    if text is not None and file is not None:
        raise CharlstmError("give the text to inspect or a file that holds it, not both")
    model, vocabulary, saved = checkpoint.load_model(checkpoint.resolve(checkpoint_path))
    check_view(model, config.gate, layer, units)
    source = "the text given"
    if file is not None:
        text, source = read_text(file, what="text file"), str(file)
    if text is None:
        text, source = default_passage(saved.train_config, model, vocabulary, config.length, config.seed)
    if skip_unknown:
        text = vocabulary.known(text)
    return gate_report(model, vocabulary, text, source, config, layer, units, keep_all)
