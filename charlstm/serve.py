"""`charlstm serve`: a model loaded once, answering HTTP; generation streams as it is drawn.

    POST /generate  {prime, length, temperature, top_k, top_p, stop, min_length, num_samples,
                     seed, stream, keep, session, units}  -> JSON, or NDJSON lines while drawing
    POST /score     {text, dynamic}  -> nats and bits per character, as `charlstm eval [--dynamic]` computes them
    GET  /health, GET /info (model, corpus, vocabulary, defaults, limits, units), GET / (the playground)
    POST /v1/completions, GET /v1/models  OpenAI's protocol (`serve_openai`), drawn in the same batch

The server is the standard library's `ThreadingHTTPServer`: a thread per connection, which
is what a batch needs anyway (each request thread waits on its own queue while the one model
thread of `serve_batch` draws for everyone), and streaming is a chunked HTTP/1.1 response
written line by line. It adds no dependency and no event loop to the one torch already runs
in; an ASGI stack would buy nothing here, since the model, not the sockets, is the bottleneck.

Safe by default: it binds to 127.0.0.1; bodies, lengths, samples per request, rows drawing
at once and kept states are limited (`ServeConfig`), and every refusal is a JSON object
`{"error": one line, "limit": "--option"}` with a 4xx status (on /v1/*, OpenAI's error shape).
A bad request never reaches the model thread, and nothing a client sends can stop the server.
With `--api-key`, /v1/* answers only requests that carry it.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from charlstm import __version__
from charlstm.config import FLAGS, InspectConfig, SamplingConfig
from charlstm.errors import CharlstmError
from charlstm.serve_batch import Batcher, GenerateRequest, Limits, Refused, Unit
from charlstm.serve_config import ServeConfig, option
from charlstm.serve_openai import NAMES as OPENAI_NAMES
from charlstm.serve_openai import Completions, authorized, error_json, model_id, models

if TYPE_CHECKING:
    from charlstm.api import Model

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure(config: ServeConfig) -> str | None:
    """The warning `charlstm serve` prints when --host is not a loopback address, or None."""
    if config.host in LOOPBACK:
        return None
    if config.api_key is None:
        return (
            "listening beyond this machine: anyone who reaches the port can use the model, and nothing asks who "
            "they are; set --api-key, or put a reverse proxy with authentication in front (docs/serve.md)"
        )
    return (
        "listening beyond this machine: /v1/* asks for the API key, but /generate, /score, /info and the "
        "playground answer anyone who reaches the port; put a reverse proxy with authentication in front of "
        "them (docs/serve.md)"
    )


MAX_UNITS = 16
"""Units one request may trace (and the playground offers at most)."""

MAX_STOPS, MAX_STOP_LENGTH = 16, 64
"""Stop strings one request may give, and their most characters: every live sample is checked
against its stop strings at each character, in the one thread that draws for everyone."""

SAMPLING_FIELDS: dict[str, str] = {
    "prime": "a string or null",
    "length": "an integer",
    "temperature": "a number",
    "top_k": "an integer",
    "top_p": "a number",
    "stop": "a string or a list of strings",
    "min_length": "an integer",
    "num_samples": "an integer",
    "seed": "an integer or null",
}
"""The `SamplingConfig` settings a request may give, with the JSON type each takes; their
meanings and defaults are `charlstm sample`'s (the dataclass's)."""

GENERATE_FIELDS: dict[str, str] = SAMPLING_FIELDS | {
    "stream": "true or false",
    "keep": "true or false",
    "session": "a string",
    "units": "a list of {layer, quantity, unit}",
}
SCORE_FIELDS = {"text": "a string", "dynamic": "true or false"}


# --- requests -------------------------------------------------------------------------


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


def _api_words(message: str, names: Mapping[str, str]) -> str:
    """A library message as a request's author reads it: settings by field name, not by flag."""
    for name in SAMPLING_FIELDS:
        flag = FLAGS.get(name)
        if flag:
            message = message.replace(flag, names.get(name, name))
    return message


def generate_request(
    body: dict[str, Any], model: Model, config: ServeConfig, names: Mapping[str, str] | None = None
) -> GenerateRequest:
    """A /generate body as the model thread's request, or `Refused` with one line saying why;
    `names` are the request's own names for settings where they differ (OpenAI's `max_tokens`)."""
    names = names or {}
    from charlstm.sample import check, unreachable_stops

    body = _checked(body, GENERATE_FIELDS)
    settings = {name: body[name] for name in SAMPLING_FIELDS if name in body}
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
    except CharlstmError as e:
        raise Refused(400, _api_words(str(e), names)) from None
    for name in ("length", "num_samples"):
        _within(name, getattr(sampling, name), name not in settings, config, names.get(name, name))
    unreachable = unreachable_stops(sampling, model.vocabulary)
    if unreachable:
        raise Refused(400, _api_words(unreachable[0], names))
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


# --- what the server says about itself ------------------------------------------------


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


def palette() -> dict[str, Any]:
    """inspect-gates' colours as tables the page looks up (101 steps each), so the page
    colours exactly as `inspect_render` does without a second copy of its formulas, and how
    each quantity's values map to [-1, 1] (`inspect_render.display_value`)."""
    from charlstm import inspect_render as render

    steps = [i / 50 - 1 for i in range(101)]
    return {
        "gate": [render._rgb(render.colour(v)) for v in steps],
        "surprise": [render._rgb(render.surprise_colour(render.SURPRISE_SCALE * i / 100)) for i in range(101)],
        "surprise_scale": render.SURPRISE_SCALE,
        "not_predicted": render._rgb(render.surprise_colour(math.nan)),
        "display": {"sigmoid": sorted(render.SIGMOID_GATES), "scaled": ["cell"]},
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
        "palette": palette(),
    }


# --- HTTP -----------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """One connection's requests. Every answer is JSON (errors too), the page, or a stream
    (NDJSON, or server-sent events on /v1/completions)."""

    protocol_version = "HTTP/1.1"
    server_version = f"charlstm/{__version__}"
    sys_version = ""
    timeout = 60
    """Seconds an idle or stalled connection is kept (a socket timeout on every read)."""
    disable_nagle_algorithm = True
    """Each line of a stream, and a response's body after its headers, leaves at once (Nagle's
    algorithm would hold a small write back for the peer's delayed ACK, 40 ms on Linux)."""
    server: Server

    def __getattr__(self, name: str) -> Any:
        """Every method (`do_GET`, `do_DELETE`, `do_BREW`, ...) goes to `_route`, which answers
        a method a path does not take with 405 and `Allow`, in JSON, and logs it like any request."""
        method = name.removeprefix("do_")
        if name.startswith("do_") and method.isascii() and method.isalpha():
            return lambda: self._route(method)
        raise AttributeError(name)

    ROUTES: ClassVar[dict[str, tuple[str, str]]] = {
        "/": ("GET", "_page"),
        "/health": ("GET", "_health"),
        "/info": ("GET", "_info"),
        "/generate": ("POST", "_generate"),
        "/score": ("POST", "_score"),
        "/v1/completions": ("POST", "_completions"),
        "/v1/models": ("GET", "_models"),
    }

    def _route(self, method: str) -> None:
        started = time.perf_counter()
        self._status = 0
        self._path = path = urlsplit(self.path).path
        try:
            try:
                getattr(self, self._handler(method, path))()
            except Refused as refused:
                self._error(refused)
            except CharlstmError as e:
                self._error(Refused(400, str(e)))
            except OSError:
                raise
            except Exception as e:  # a bug: answer 500, keep serving
                self.close_connection = True
                self.server.log(f"internal error on {method} {path}: {type(e).__name__}: {e}")
                self._error(Refused(500, f"internal error: {type(e).__name__}: {e}"))
        except OSError:  # the client went away, or stalled past the timeout
            self.close_connection = True
        self.server.log(f"{self.client_address[0]} {method} {path} {self._status} {time.perf_counter() - started:.3f}s")

    def _handler(self, method: str, path: str) -> str:
        """The route that answers this request; `Refused` when /v1/* lacks the API key, the path
        is unknown or does not take the method (then the connection closes after the answer:
        a body sent with the request is left unread)."""
        key = self.server.config.api_key
        if path.startswith("/v1/") and key is not None and not authorized(self.headers.get("Authorization"), key):
            refused = Refused(401, "send this server's API key: Authorization: Bearer KEY")
        elif path not in self.ROUTES:
            refused = Refused(404, f"no such path {path}; the paths are {', '.join(self.ROUTES)}")
        elif method not in self._allowed():
            refused = Refused(405, f"{path} takes {self.ROUTES[path][0]}, not {method}")
        else:
            return self.ROUTES[path][1]
        self.close_connection = method not in ("GET", "HEAD")
        raise refused

    def _allowed(self) -> tuple[str, ...]:
        """The methods this request's path takes: its route's, and HEAD (GET without the body) beside GET."""
        method = self.ROUTES[self._path][0]
        return (method, "HEAD") if method == "GET" else (method,)

    def _error(self, refused: Refused) -> None:
        """A refusal in the shape its path speaks: OpenAI's on /v1/*, charlstm's elsewhere."""
        self._json(refused.status, error_json(refused) if self._path.startswith("/v1/") else refused.to_json())

    def _body(self) -> dict[str, Any]:
        """The request's JSON object, read only when its size is within --max-body."""
        limit = self.server.config.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise Refused(411, "send the body with a Content-Length; chunked request bodies are not read")
        declared = self.headers.get("Content-Length")
        if declared is None:
            self.close_connection = True
            raise Refused(411, "the request has no Content-Length; send a JSON object as the body")
        try:
            size = int(declared)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise Refused(400, f"Content-Length {declared!r} is not a number of bytes") from None
        if size > limit:
            self.close_connection = True
            raise Refused(
                413,
                f"the body is {size:,} bytes, above this server's {option('max_body')} {limit:,}",
                option("max_body"),
            )
        raw = self.rfile.read(size)
        if len(raw) < size:
            self.close_connection = True
            raise Refused(400, f"the body ended after {len(raw)} of its {size} bytes")
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as e:
            raise Refused(400, f"the body is not UTF-8 text: {e.reason} at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise Refused(400, f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except (ValueError, RecursionError) as e:
            raise Refused(400, f"the body is not JSON charlstm reads: {e}") from None
        if not isinstance(value, dict):
            raise Refused(
                400,
                f"the body must be a JSON object {{...}}, got {type(value).__name__ if value is not None else 'null'}",
            )
        return value

    def _json(self, status: int, value: Any) -> None:
        body = (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")
        self._head(status, "application/json; charset=utf-8", len(body))
        self._write(body)

    def _write(self, body: bytes) -> None:
        """A response's body, after its head; none for HEAD, whose answer is the head alone."""
        if self.command != "HEAD":
            self.wfile.write(body)

    def _head(self, status: int, content_type: str, length: int | None = None) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Accel-Buffering", "no")  # nginx: pass each line on at once
        else:
            self.send_header("Content-Length", str(length))
        if status == 405:
            self.send_header("Allow", ", ".join(self._allowed()))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, a method no route
        has, headers too long) as JSON like every other error."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line too broken to name a version
            self.request_version = "HTTP/1.0"
        with contextlib.suppress(OSError):
            self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `_route` logs one line a request through the server's `log`."""

    # --- the routes -------------------------------------------------------------------

    def _page(self) -> None:
        body = self.server.page
        self._head(200, "text/html; charset=utf-8", len(body))
        self._write(body)

    def _health(self) -> None:
        batcher = self.server.batcher
        status = "ok" if batcher.alive() else "stopping"
        self._json(
            200 if status == "ok" else 503,
            {"status": status, "drawing": batcher.drawing(), "sessions": len(batcher.sessions), "steps": batcher.steps},
        )

    def _info(self) -> None:
        self._json(200, self.server.info)

    def _score(self) -> None:
        self._json(200, score(self._body(), self.server.model, self.server.score_lock))

    def _generate(self) -> None:
        request = generate_request(self._body(), self.server.model, self.server.config)
        job = self.server.batcher.submit(request)
        events = job.wait(self.server.batcher.alive)
        try:
            if request.stream:
                self._stream(events, "application/x-ndjson; charset=utf-8", _ndjson)
            else:
                self._collect(events, lambda done: {"samples": sorted(done, key=lambda s: s["sample"])})
        finally:
            job.cancel()

    def _completions(self) -> None:
        """OpenAI's completions: each prompt a job of n samples in the batch, read in turn."""
        server = self.server
        completions = Completions(self._body(), server.model_id, server.config, server.model.vocabulary)
        requests = [
            replace(generate_request(body, server.model, server.config, OPENAI_NAMES), logprobs=completions.logprobs)
            for body in completions.bodies
        ]
        jobs = []
        try:
            jobs += [server.batcher.submit(request) for request in requests]
            events = completions.events(job.wait(server.batcher.alive) for job in jobs)
            if completions.stream:
                self._stream(events, "text/event-stream; charset=utf-8", completions.sse, completions.sse_end)
            else:
                self._collect(events, completions.response)
        finally:
            for job in jobs:
                job.cancel()

    def _models(self) -> None:
        server = self.server
        self._json(200, models(server.model_id, server.model.path, server.info["model"], server.config))

    def _collect(self, bunches: Iterable[list[dict[str, Any]]], answer: Callable[[list[dict]], Any]) -> None:
        """The answer made of every sample's done event, or the first error."""
        done = []
        for event in (event for bunch in bunches for event in bunch):
            if event["type"] == "error":
                raise Refused(event["status"], event["error"], event.get("limit"))
            if event["type"] == "done":
                done.append({k: v for k, v in event.items() if k != "type"})
        self._json(200, answer(done))

    def _stream(
        self,
        bunches: Iterable[list[dict[str, Any]]],
        content_type: str,
        render: Callable[[list[dict[str, Any]]], str],
        end: Callable[[], str] = str,
    ) -> None:
        """A chunked response written as the events come (those that queued up meanwhile in
        one chunk), each bunch as `render` writes it, then `end()`. An error before the first
        chunk is an ordinary error answer; after it, `render` writes it in the stream."""
        started = False
        for bunch in bunches:
            if not started:
                if bunch[0]["type"] == "error":
                    raise Refused(bunch[0]["status"], bunch[0]["error"], bunch[0].get("limit"))
                self._head(200, content_type)
                started = True
            self._chunk(render(bunch))
        if started:
            self._chunk(end())
            self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, text: str) -> None:
        data = text.encode("utf-8")
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _ndjson(bunch: list[dict[str, Any]]) -> str:
    """/generate's stream: one JSON line per event (an error as a last line of type error)."""
    return "".join(json.dumps({k: v for k, v in e.items() if k != "status"}, ensure_ascii=False) + "\n" for e in bunch)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is no number JSON allows")


class Server(ThreadingHTTPServer):
    """The listening socket, the loaded model and its model thread. `serve_forever()` answers
    until `shutdown()`; `close()` stops the model thread and the socket."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        model: Model,
        config: ServeConfig,
        units: list[dict[str, Any]] | None = None,
        units_from: str = "",
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.model, self.config, self.log = model, config, log or (lambda line: None)
        self.info = describe(model, config, units or [], units_from)
        self.model_id = model_id(model.path)
        """The name /v1/* clients ask for (the run's)."""
        self.page = resources.files("charlstm").joinpath("serve_page.html").read_bytes()
        self.score_lock = threading.Lock()
        limits = Limits(config.max_rows, config.max_sessions, config.session_ttl)
        self.batcher = Batcher(model.model, model.vocabulary, limits, clock)
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        try:
            super().__init__((config.host, config.port), Handler)
        except OSError as e:
            raise CharlstmError(
                f"cannot listen on {config.host} port {config.port}: {e.strerror or e}; choose another --port or --host"
            ) from None
        self.batcher.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"

    @property
    def summary(self) -> str:
        """The model being served, in a few words."""
        c = self.model.model.config
        return f"{c.cell} {c.layers}x{c.hidden}, {len(self.model.vocabulary)} characters, {self.model.path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside a route (reset while its headers were read): one
        line in the log, not the standard library's traceback."""
        import sys

        error = sys.exc_info()[1]
        self.log(f"{client_address[0]} connection failed: {type(error).__name__}: {error}")

    def close(self) -> None:
        self.batcher.stop()
        self.server_close()


def start(checkpoint: str | Path | None, config: ServeConfig, log: Callable[[str], None] | None = None) -> Server:
    """Load the checkpoint (a file, a run folder, None for the newest run), find the units the
    playground offers, and listen; `serve_forever()` on the result answers requests."""
    from charlstm import api

    model = api.load(checkpoint)
    units, units_from = offered_units(model)
    return Server(model, config, units, units_from, log)
