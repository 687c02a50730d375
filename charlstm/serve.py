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

This module is the HTTP layer: routes, bodies, answers and streams (`Handler`), the listening
socket with the model and its model thread (`Server`), and `start`. What a request may ask is
checked in `serve_requests`, what the server says about itself is `serve_info`, and the batch
every request draws in is `serve_batch`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from charlstm import __version__
from charlstm.errors import CharlstmError
from charlstm.serve_batch import Batcher, Limits, Refused
from charlstm.serve_config import ServeConfig, option
from charlstm.serve_info import describe, offered_units
from charlstm.serve_openai import NAMES as OPENAI_NAMES
from charlstm.serve_openai import Completions, authorized, error_json, model_id, models
from charlstm.serve_requests import generate_request, score

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
