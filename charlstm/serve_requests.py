"""What a request to `charlstm serve` may ask, checked before it reaches the model thread.

A /generate body becomes a `serve_batch.GenerateRequest` (`generate_request`), or a
`serve_batch.Refused` whose one line says which field is wrong and why, with the option that
sets a limit the request went over; OpenAI's /v1/completions bodies come here too, turned
into /generate bodies by `serve_openai`, and its messages name a setting by the request's own
name for it. A /score body is scored here as `charlstm eval` scores a text (`score`). The
settings, their defaults and their own checks are `SamplingConfig`'s and `sample.check`'s,
so the server refuses exactly what `charlstm sample` refuses. Nothing here knows HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from charlstm.config import REQUEST_FIELDS, SamplingConfig
from charlstm.errors import CharlstmError, SettingError
from charlstm.serve_batch import GenerateRequest, Refused, Unit
from charlstm.serve_config import ServeConfig, option

if TYPE_CHECKING:
    from charlstm.api import Model


MAX_UNITS = 16
"""Units one request may trace (and the playground offers at most)."""

MAX_STOPS, MAX_STOP_LENGTH = 16, 64
"""Stop strings one request may give, and their most characters: every live sample is checked
against its stop strings at each character, in the one thread that draws for everyone."""

GENERATE_FIELDS: dict[str, str] = REQUEST_FIELDS | {
    "stream": "true or false",
    "keep": "true or false",
    "session": "a string",
    "units": "a list of {layer, quantity, unit}",
}
SCORE_FIELDS = {"text": "a string", "dynamic": "true or false"}


def _kind_ok(kind: str, value: Any) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return {
        "an integer": is_int,
        "an integer or null": value is None or is_int,
        "a number": is_int or isinstance(value, float),
        "a string": isinstance(value, str),
        "a string or null": value is None or isinstance(value, str),
        "a string or a list of strings": isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
        "true or false": isinstance(value, bool),
        "a list of {layer, quantity, unit}": isinstance(value, list),
    }[kind]


def _checked(body: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """`body` once every field is known and of its type."""
    unknown = sorted(body.keys() - known.keys())
    if unknown:
        raise Refused(400, f"unknown field {unknown[0]!r}; the fields are {', '.join(known)}")
    for name, value in body.items():
        if not _kind_ok(known[name], value):
            raise Refused(400, f"{name} must be {known[name]}, got {json.dumps(value)[:40]}")
    return body


def generate_request(
    body: dict[str, Any], model: Model, config: ServeConfig, names: Mapping[str, str] | None = None
) -> GenerateRequest:
    """A /generate body as the model thread's request, or `Refused` with one line saying why;
    `names` are the request's own names for settings where they differ (OpenAI's `max_tokens`)."""
    names = names or {}
    from charlstm.sample import check, unreachable_stops

    body = _checked(body, GENERATE_FIELDS)
    settings = {name: body[name] for name in REQUEST_FIELDS if name in body}
    if "stop" in settings:
        stops = settings["stop"] = (settings["stop"],) if isinstance(settings["stop"], str) else tuple(settings["stop"])
        if len(stops) > MAX_STOPS or max(map(len, stops), default=0) > MAX_STOP_LENGTH:
            raise Refused(400, f"stop takes at most {MAX_STOPS} strings of at most {MAX_STOP_LENGTH} characters each")
    session = body.get("session")
    if "seed" in settings and settings["seed"] is not None:
        last = settings["seed"] + settings.get("num_samples", 1) - 1
        if settings["seed"] < -(2**63) or last >= 2**64:
            raise Refused(400, f"seed must be in -2**63 .. 2**64 - num_samples, got {settings['seed']}")
    read = ""
    if session is not None:
        if "seed" in settings or settings.get("num_samples", 1) != 1:
            raise Refused(
                400, "a continuation draws one sample on from its own random stream: leave out seed and num_samples"
            )
        read = settings.pop("prime", None) or ""
        model.vocabulary.check(read, "the prime")  # CharlstmError: 400 where it is caught
    try:
        sampling = replace(SamplingConfig(), **settings)
        prime = read if session is not None else check(sampling, model.vocabulary)
    except SettingError as e:  # named as the request names it (OpenAI's max_tokens)
        raise Refused(400, e.spelled(lambda name: names.get(name, name))) from None
    except CharlstmError as e:
        raise Refused(400, str(e)) from None
    for name in ("length", "num_samples"):
        _within(name, getattr(sampling, name), name not in settings, config, names.get(name, name))
    unreachable = unreachable_stops(sampling, model.vocabulary)
    if unreachable:
        raise Refused(400, unreachable[0].spelled(lambda name: names.get(name, name)))
    if len(body.get("units", ())) > MAX_UNITS:
        raise Refused(400, f"units lists {len(body['units'])} units; at most {MAX_UNITS} may be traced at once")
    units = tuple(_unit(value, model) for value in body.get("units", ()))
    return GenerateRequest(sampling, prime, body.get("stream", False), body.get("keep", False), session, units)


def _within(name: str, value: int, default: bool, config: ServeConfig, called: str) -> None:
    """Refuse a `length` or `num_samples` (asked for, or the default) above the server's limit;
    `called` is the request's name for it."""
    limit = {"length": "max_length", "num_samples": "max_samples"}[name]
    if value > getattr(config, limit):
        given = f"{called} {value}" + (" (the default)" if default else "")
        raise Refused(400, f"{given} is above this server's {option(limit)} {getattr(config, limit)}", option(limit))


def _unit(value: Any, model: Model) -> Unit:
    """One entry of `units`: {"layer": L, "quantity": Q, "unit": U}, each within the model."""
    if not isinstance(value, dict) or set(value) != {"layer", "quantity", "unit"}:
        raise Refused(400, 'each entry of units must be {"layer": L, "quantity": Q, "unit": U}')
    layer, quantity, unit = value["layer"], value["quantity"], value["unit"]
    c, quantities = model.model.config, model.model.kind.quantities
    if not _kind_ok("an integer", layer) or not 0 <= layer < c.layers:
        raise Refused(400, f"units: layer must be an integer in 0..{c.layers - 1}, got {json.dumps(layer)}")
    if quantity not in quantities:
        raise Refused(
            400, f"units: a {c.cell} model has no quantity {json.dumps(quantity)}; it has {', '.join(quantities)}"
        )
    if not _kind_ok("an integer", unit) or not 0 <= unit < c.hidden:
        raise Refused(400, f"units: unit must be an integer in 0..{c.hidden - 1}, got {json.dumps(unit)}")
    return Unit(layer, quantity, quantities.index(quantity), unit)


def score(body: dict[str, Any], model: Model, lock: threading.Lock) -> dict[str, Any]:
    """A /score body's text scored by `Model.score` (what `charlstm eval` computes); with
    `"dynamic": true`, by a copy of the weights adapting to it for this request alone (what
    `charlstm eval --dynamic` computes), beside the static figure of the same reading."""
    import torch

    body = _checked(body, SCORE_FIELDS)
    text = body.get("text")
    if text is None:
        raise Refused(400, 'score needs a text: {"text": "..."}')
    try:
        with lock, torch.no_grad():
            result = model.score(text, dynamic=body.get("dynamic", False))
    except CharlstmError as e:
        raise Refused(400, str(e)) from None
    answer = {"nats_per_char": result.nats, "bits_per_char": result.bits, "characters": result.characters}
    if body.get("dynamic"):
        answer |= {"static_nats_per_char": result.static.nats, "static_bits_per_char": result.static.bits}
    return answer
