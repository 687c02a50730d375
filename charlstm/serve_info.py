"""What `charlstm serve` says about itself: GET /info, and the units the playground offers.

Computed once when the server starts, from the loaded model: its shape, corpus and
vocabulary, the sampling defaults and the server's limits (`describe`), the units the
playground traces (`offered_units`, found by inspect-gates' unit finder) and inspect-gates'
colours as tables the page looks up (`palette`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from charlstm import __version__
from charlstm.config import InspectConfig, SamplingConfig
from charlstm.serve_config import ServeConfig, option
from charlstm.serve_requests import MAX_UNITS, SAMPLING_FIELDS

if TYPE_CHECKING:
    from charlstm.api import Model


def offered_units(model: Model) -> tuple[list[dict[str, Any]], str]:
    """The units the playground offers, with the text feature each tracks best, found once by
    `charlstm inspect-gates`' unit finder on its default passage; and what that passage was."""
    from charlstm import inspect

    defaults = InspectConfig()
    settings = model.checkpoint.train_config
    text, source = inspect.default_passage(settings, model.model, model.vocabulary, defaults.length, defaults.seed)
    report = inspect.gate_report(model.model, model.vocabulary, text, source)
    inspection = report.inspection
    findings = [
        *inspection.strongest_units(report.quantity, report.layer),
        *report.finder,
        *(inspection.strongest_units(gate, n=1)[0] for gate in model.model.kind.gate_names),
    ]
    offered: dict[tuple[int, str, int], dict[str, Any]] = {}
    for f in findings:
        key = (f.layer, f.quantity, f.unit)
        if key not in offered and len(offered) < MAX_UNITS:
            offered[key] = {
                "layer": f.layer,
                "quantity": f.quantity,
                "unit": f.unit,
                "feature": f.feature,
                "r": round(f.r, 3),
            }
    return list(offered.values()), source


def palette(sigmoid_gates: tuple[str, ...]) -> dict[str, Any]:
    """inspect-gates' colours as tables the page looks up (101 steps each), so the page
    colours exactly as `inspect_render` does without a second copy of its formulas, and how
    each quantity's values map to [-1, 1] (`inspect_render.display_value`; `sigmoid_gates`
    are the model's cell's gates in [0, 1])."""
    from charlstm import inspect_render as render

    steps = [i / 50 - 1 for i in range(101)]
    return {
        "gate": [render._rgb(render.colour(v)) for v in steps],
        "surprise": [render._rgb(render.surprise_colour(render.SURPRISE_SCALE * i / 100)) for i in range(101)],
        "surprise_scale": render.SURPRISE_SCALE,
        "not_predicted": render._rgb(render.surprise_colour(math.nan)),
        "display": {"sigmoid": sorted(sigmoid_gates), "scaled": ["cell"]},
    }


def describe(model: Model, config: ServeConfig, units: list[dict[str, Any]], units_from: str) -> dict[str, Any]:
    """GET /info: what is loaded and what a request may ask."""
    from charlstm.model import parameter_count

    c = model.model.config
    train_config, resume = model.checkpoint.train_config, model.checkpoint.resume
    defaults = asdict(SamplingConfig())
    return {
        "charlstm": __version__,
        "model": {
            "checkpoint": str(model.path),
            "cell": c.cell,
            "layers": c.layers,
            "hidden": c.hidden,
            "embedding": c.embedding,
            "parameters": parameter_count(model.model),
            "quantities": list(model.model.kind.quantities),
            "steps_trained": resume.step if resume else None,
            "best_val_bits_per_char": resume.best_val_loss / math.log(2) if resume and resume.best_val_loss else None,
        },
        "corpus": (train_config.corpus or "the default corpus") if train_config else None,
        "vocabulary": {"size": len(model.vocabulary), "characters": model.vocabulary.chars},
        "defaults": {name: defaults[name] for name in SAMPLING_FIELDS},
        "limits": {
            option(f.name): getattr(config, f.name)
            for f in fields(ServeConfig)
            if f.name.startswith(("max", "session"))
        },
        "units": units,
        "units_from": units_from,
        "palette": palette(model.model.kind.sigmoid_gates),
    }
