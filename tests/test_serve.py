"""`charlstm serve` against a real server on a free loopback port: generation, streaming,
scores, continuations, every limit and bad request, the command itself, and the playground
page in headless Chromium.

Each server runs in a thread of the test process (port 0: the system picks a free port),
and is shut down by its fixture; every socket has a timeout and every wait a bound, so a
broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import charlstm
from charlstm.config import SamplingConfig
from charlstm.serve import Handler, Server, exposure
from charlstm.serve_config import ServeConfig
from charlstm.serve_info import offered_units
from tests.helpers import ENGLISH_CHARACTERS

TIMEOUT = 30.0
"""Seconds any one socket operation may take before the test fails."""

PRIME = "The "


class Client:
    """Requests to one server over fresh connections; answers as (status, JSON)."""

    def __init__(self, server: Server):
        self.server = server
        self.host, self.port = server.server_address[:2]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        connection = self.connection()
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            text = response.read().decode("utf-8")
            assert response.getheader("Content-Type", "").startswith(("application/json", "text/html")), text
            return response.status, json.loads(text) if "json" in response.getheader("Content-Type") else text
        finally:
            connection.close()

    def post(self, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **options)

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def generate(self, **body: Any) -> list[dict[str, Any]]:
        status, answer = self.post("/generate", body)
        assert status == 200, answer
        return answer["samples"]

    @contextmanager
    def streaming(self, **body: Any) -> Iterator[Iterator[dict[str, Any]]]:
        """The NDJSON events of a streaming /generate, read one line at a time."""
        connection = self.connection()
        try:
            connection.request("POST", "/generate", body=json.dumps(body | {"stream": True}).encode())
            response = connection.getresponse()
            assert response.status == 200, response.read()
            assert response.getheader("Content-Type").startswith("application/x-ndjson")

            def events() -> Iterator[dict[str, Any]]:
                while line := response.readline():
                    yield json.loads(line)

            yield events()
        finally:
            connection.close()

    def stream(self, **body: Any) -> list[dict[str, Any]]:
        with self.streaming(**body) as events:
            return list(events)

    def healthy(self) -> dict[str, Any]:
        status, answer = self.get("/health")
        assert status == 200 and answer["status"] == "ok", answer
        return answer


@contextmanager
def running(
    run: Path, units: list | None = None, clock: Any = None, log: Any = None, **limits: Any
) -> Iterator[Client]:
    """A server for `run` on a free loopback port, answering from a thread until the block ends."""
    server = Server(charlstm.load(run), ServeConfig(port=0, **limits), units, "a test passage", log, clock)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Client(server)
    finally:
        server.shutdown()
        server.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def sensitive_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model whose weights are scaled up until every character it draws depends
    on its state: a briefly trained one hardly looks past the last character, so a
    continuation from a wrong state would draw the same text and pass unnoticed."""
    import torch

    from charlstm.checkpoint import FORMAT_VERSION, save_atomic
    from charlstm.model import CharLSTM, ModelConfig

    chars = "".join(sorted(ENGLISH_CHARACTERS))
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(len(chars), layers=2, hidden=32, embedding=16))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)
    path = tmp_path_factory.mktemp("sensitive") / "model.pt"
    payload = {"format": FORMAT_VERSION, "model_config": model.config.to_dict(), "vocabulary": chars}
    save_atomic(payload | {"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def client(sensitive_run: Path) -> Iterator[Client]:
    with running(sensitive_run) as c:
        yield c


@pytest.fixture(scope="module")
def model(sensitive_run: Path) -> charlstm.Model:
    return charlstm.load(sensitive_run)


def test_the_test_model_draws_by_its_state(model: charlstm.Model) -> None:
    one = model.generate(prime=PRIME, length=40, seed=3)[0]
    other = model.generate(prime="(" + PRIME, length=40, seed=3)[0]
    assert sum(a != b for a, b in zip(one, other, strict=True)) > 10


def until(condition: Any, what: str, limit: float = TIMEOUT) -> None:
    """Wait (bounded) until `condition()` holds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


# --- generation ----------------------------------------------------------------------


def test_generate_draws_what_the_python_api_draws(client: Client, model: charlstm.Model) -> None:
    samples = client.generate(prime=PRIME, length=60, num_samples=3, seed=5, temperature=0.9, top_p=0.95)
    expected = model.generate(prime=PRIME, length=60, num_samples=3, seed=5, temperature=0.9, top_p=0.95)
    assert [s["text"] for s in samples] == expected
    assert [s["sample"] for s in samples] == [0, 1, 2]
    assert [s["seed"] for s in samples] == [5, 6, 7]
    first = samples[0]
    assert first["prime"] == PRIME and first["characters"] == 60 and first["stop_reason"] == "length"
    assert 0 < first["bits_per_char"] < 20
    assert "session" not in first


def test_defaults_are_charlstm_samples(client: Client) -> None:
    (sample,) = client.generate(seed=1)
    defaults = SamplingConfig()
    assert sample["characters"] == defaults.length
    assert sample["prime"] == "\n"


def test_stop_strings_end_a_sample_and_are_left_out(client: Client, model: charlstm.Model) -> None:
    samples = client.generate(prime=PRIME, length=300, num_samples=4, seed=2, stop=["e", "a"])
    expected = model.generate(prime=PRIME, length=300, num_samples=4, seed=2, stop=("e", "a"))
    assert [s["text"] for s in samples] == expected
    assert all(s["stop_reason"] == "stop" and s["stop"] in ("e", "a") for s in samples)
    assert all("e" not in s["text"] and "a" not in s["text"] for s in samples)


def test_stream_sends_pieces_then_each_sample_whole(client: Client) -> None:
    events = client.stream(prime=PRIME, length=80, num_samples=2, seed=3)
    whole = client.generate(prime=PRIME, length=80, num_samples=2, seed=3)
    for k in (0, 1):
        pieces = [e for e in events if e["type"] == "text" and e["sample"] == k]
        (done,) = [e for e in events if e["type"] == "done" and e["sample"] == k]
        assert "".join(e["text"] for e in pieces) == done["text"] == whole[k]["text"]
        assert all(len(e["bits"]) == len(e["text"]) for e in pieces)
        bits = [b for e in pieces for b in e["bits"]]
        assert sum(bits) / len(bits) == pytest.approx(done["bits_per_char"], abs=1e-3)
        assert events.index(done) > events.index(pieces[-1])


def test_stream_holds_back_a_stop_string(client: Client) -> None:
    events = client.stream(prime=PRIME, length=400, seed=4, stop="e ")
    (done,) = [e for e in events if e["type"] == "done"]
    shown = "".join(e["text"] for e in events if e["type"] == "text")
    assert shown == done["text"]
    if done["stop_reason"] == "stop":
        assert not shown.endswith("e")


def test_stream_arrives_while_the_sample_is_drawn(client: Client) -> None:
    batcher = client.server.batcher
    with client.streaming(prime=PRIME, length=10_000, seed=5) as events:
        first = next(events)
        with batcher.held():
            assert first["type"] == "text"
            assert batcher.drawing() == 1  # the sample is still being drawn: the client already has text
        rest = list(events)
    assert rest[-1]["type"] == "done" and rest[-1]["characters"] == 10_000


def test_a_client_that_leaves_stops_its_sample(client: Client) -> None:
    batcher = client.server.batcher
    steps_before = batcher.steps
    with client.streaming(prime=PRIME, length=10_000, seed=6) as events:
        next(events)
    until(lambda: batcher.drawing() == 0, "the abandoned sample to leave the batch")
    assert batcher.steps - steps_before < 9_000  # it did not draw to the end
    client.healthy()


def test_streamed_values_are_the_gate_trace_and_bits_the_surprise(client: Client, model: charlstm.Model) -> None:
    from charlstm.inspect import inspect_text

    quantities = model.model.kind.quantities
    units = [{"layer": 1, "quantity": "cell", "unit": 3}, {"layer": 0, "quantity": "forget", "unit": 0}]
    events = client.stream(prime=PRIME, length=50, seed=7, units=units)
    pieces = [e for e in events if e["type"] == "text"]
    text = "".join(e["text"] for e in pieces)
    values = [v for e in pieces for v in e["values"]]
    bits = [b for e in pieces for b in e["bits"]]
    trace = inspect_text(model.model, model.vocabulary, PRIME + text, keep=None)
    for t in range(len(text)):
        step = len(PRIME) + t
        for k, u in enumerate(units):
            expected = float(trace.values[step, u["layer"], quantities.index(u["quantity"]), u["unit"]])
            assert values[t][k] == pytest.approx(expected, abs=2e-4)
        assert bits[t] == pytest.approx(float(trace.expected.bits[step]), abs=2e-3)


def test_answers_leave_without_waiting_for_the_clients_ack(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """TCP_NODELAY on every connection: the body written after the headers (and each line of a
    stream) is not held back by Nagle's algorithm for the client's delayed ACK (40 ms a request)."""
    from charlstm.serve import Handler

    seen = []
    setup = Handler.setup

    def watched(handler: Handler) -> None:
        setup(handler)
        seen.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(Handler, "setup", watched)
    client.healthy()
    assert seen and all(seen)


def test_requests_that_arrive_together_are_drawn_as_one_batch(sensitive_run: Path, model: charlstm.Model) -> None:
    with running(sensitive_run) as c:
        batcher = c.server.batcher
        answers: dict[int, list] = {}

        def ask(seed: int) -> None:
            answers[seed] = c.generate(prime=PRIME, length=40, seed=seed)

        with batcher.held():
            threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(4)]
            for thread in threads:
                thread.start()
            until(lambda: batcher.inbox.qsize() == 4, "four requests to wait together")
            steps_before = batcher.steps
        for thread in threads:
            thread.join(TIMEOUT)
        assert batcher.steps - steps_before == 40  # four samples of 40 characters in 40 batched steps
        for seed in range(4):
            assert [s["text"] for s in answers[seed]] == model.generate(prime=PRIME, length=40, seed=seed)


# --- scores and continuations --------------------------------------------------------


def test_score_is_what_charlstm_eval_computes(client: Client, model: charlstm.Model, english: str) -> None:
    text = english[:2000]
    status, answer = client.post("/score", {"text": text})
    assert status == 200, answer
    expected = model.score(text)
    assert answer["nats_per_char"] == pytest.approx(expected.nats, rel=1e-6)
    assert answer["bits_per_char"] == pytest.approx(expected.nats / math.log(2), rel=1e-6)
    assert answer["characters"] == expected.characters


def test_a_continuation_is_one_long_sample(client: Client) -> None:
    settings = {"prime": PRIME, "temperature": 0.9, "top_k": 20}
    (first,) = client.generate(**settings, length=70, seed=11, keep=True)
    session = first["session"]
    assert not client.server.batcher.sessions[session].row.chars  # a kept state holds no text
    (second,) = client.generate(session=session, length=50, temperature=0.9, top_k=20, keep=True)
    assert second["session"] == session and second["prime"] == ""
    events = client.stream(session=session, length=80, temperature=0.9, top_k=20)
    (third,) = [e for e in events if e["type"] == "done"]
    assert "session" not in third
    (whole,) = client.generate(**settings, length=200, seed=11)
    assert first["text"] + second["text"] + third["text"] == whole["text"]
    status, answer = client.post("/generate", {"session": session, "length": 10})
    assert status == 404 and "no kept state" in answer["error"]


def test_a_continuation_reads_new_text_before_drawing(client: Client, model: charlstm.Model) -> None:
    (first,) = client.generate(prime=PRIME, length=30, seed=12, keep=True)
    (second,) = client.generate(session=first["session"], prime="\nThe ", length=30, temperature=0)
    greedy = model.generate(prime=PRIME + first["text"] + "\nThe ", length=30, temperature=0)
    assert second["prime"] == "\nThe "
    assert second["text"] == greedy[0]


def test_a_prime_is_read_by_its_request_not_by_the_batch(client: Client) -> None:
    """A long prime costs its own request's thread, not every sample being drawn: the job
    reaches the model thread with its prime already read."""
    batcher = client.server.batcher
    answers = []
    with batcher.held():
        thread = threading.Thread(target=lambda: answers.append(client.generate(prime=PRIME * 50, length=5, seed=1)))
        thread.start()
        until(lambda: batcher.inbox.qsize() == 1, "the request to be queued")
        assert batcher.inbox.queue[0].primed is not None
    thread.join(TIMEOUT)
    assert answers[0][0]["characters"] == 5


def test_a_refused_continuation_keeps_its_state_as_it_was(sensitive_run: Path) -> None:
    with running(sensitive_run, max_rows=1) as c:
        (first,) = c.generate(prime=PRIME, length=20, seed=3, keep=True)
        with c.streaming(prime=PRIME, length=10_000, seed=4) as events:
            next(events)  # the one row the server may draw is taken
            answer = refused(c, 429, {"session": first["session"], "prime": "xyz", "length": 5})
            assert answer["limit"] == "--max-rows"
        until(lambda: c.server.batcher.drawing() == 0, "the abandoned sample to leave the batch")
        (second,) = c.generate(session=first["session"], length=30)
        (whole,) = c.generate(prime=PRIME, length=50, seed=3)
    assert first["text"] + second["text"] == whole["text"]


def test_kept_states_expire_after_their_time(trained_run: Path) -> None:
    now = [1000.0]
    with running(trained_run, clock=lambda: now[0], session_ttl=60) as c:
        (a,) = c.generate(prime=PRIME, length=5, seed=1, keep=True)
        (b,) = c.generate(prime=PRIME, length=5, seed=2, keep=True)
        now[0] += 59
        (again,) = c.generate(session=a["session"], length=5, keep=True)
        assert again["session"] == a["session"]
        now[0] += 2  # b is 61 s old, a was kept again 2 s ago
        status, answer = c.post("/generate", {"session": b["session"], "length": 5})
        assert status == 404 and "--session-ttl" in answer["error"]
        (last,) = c.generate(session=a["session"], length=5)
        assert c.healthy()["sessions"] == 0 and last["characters"] == 5


# --- limits and bad requests: a 4xx JSON error, and the server answers after -------------


def refused(client: Client, status: int, body: Any = None, path: str = "/generate", **options: Any) -> dict:
    """A POST (or, with `method="GET"`, a GET) that must be refused with `status` and one line."""
    if options.pop("method", "POST") == "GET":
        code, answer = client.get(path)
    else:
        code, answer = client.post(path, body, **options)
    assert code == status, answer
    assert isinstance(answer, dict) and isinstance(answer["error"], str), answer
    assert answer["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    client.healthy()
    return answer


@pytest.mark.parametrize(
    ("body", "status", "limit"),
    [
        ({"length": 10_001}, 400, "--max-length"),
        ({"num_samples": 65}, 400, "--max-samples"),
    ],
)
def test_limits_on_a_request(client: Client, body: dict, status: int, limit: str) -> None:
    answer = refused(client, status, body)
    assert answer["limit"] == limit and limit in answer["error"]


def test_the_default_length_counts_against_the_limit(trained_run: Path) -> None:
    with running(trained_run, max_length=100) as c:
        answer = refused(c, 400, {})
        default = SamplingConfig().length
        assert answer["error"] == f"length {default} (the default) is above this server's --max-length 100"
        assert c.generate(length=100)[0]["characters"] == 100


def test_a_body_above_the_limit_is_refused_unread(client: Client) -> None:
    answer = refused(client, 413, raw=b"{" + b" " * 70_000 + b"}")
    assert answer["limit"] == "--max-body" and "65,536" in answer["error"]


def test_limits_on_the_batch_and_on_kept_states(trained_run: Path) -> None:
    with running(trained_run, max_rows=4, max_sessions=2) as c:
        answer = refused(c, 429, {"num_samples": 5, "length": 5})
        assert answer["limit"] == "--max-rows"
        kept = c.generate(prime=PRIME, length=5, num_samples=2, seed=1, keep=True)
        answer = refused(c, 429, {"length": 5, "keep": True})
        assert answer["limit"] == "--max-sessions"
        c.generate(session=kept[0]["session"], length=5)  # continued without keep: its place is free
        (third,) = c.generate(prime=PRIME, length=5, keep=True)
        assert third["session"] and c.healthy()["sessions"] == 2


BAD_BODIES = [
    (b"{", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"length": NaN}', "not JSON"),
    (b'{"prime": "\xff"}', "not UTF-8"),
    (b"[" * 30_000 + b"]" * 30_000, "JSON"),
    (b'{"lenght": 5}', "unknown field 'lenght'"),
    (b'{"length": "5"}', "length must be an integer"),
    (b'{"length": 5.5}', "length must be an integer"),
    (b'{"length": true}', "length must be an integer"),
    (b'{"temperature": "hot"}', "temperature must be a number"),
    (b'{"stop": [1]}', "stop must be a string or a list of strings"),
    (b'{"stream": 1}', "stream must be true or false"),
    (b'{"temperature": -1}', "temperature must be a number >= 0"),
    (b'{"top_p": 0}', "top_p must be in (0, 1]"),
    (b'{"length": -1}', "length"),
    (b'{"stop": [""]}', "stop needs text"),
    (b'{"stop": "' + b"x" * 65 + b'"}', "stop takes at most 16 strings of at most 64 characters"),
    (json.dumps({"stop": list("abcdefghijklmnopq")}).encode(), "stop takes at most 16 strings"),
    (b'{"prime": ""}', "prime is empty; leave it out to start from a newline"),
    (b'{"seed": 18446744073709551616}', "seed must be in"),
    ('{"prime": "Ωmega"}'.encode(), "the prime text has characters the model never saw: 'Ω'"),
    ('{"stop": "Ω"}'.encode(), "can never end a sample"),
    (b'{"session": "nope", "seed": 1}', "leave out seed"),
    (b'{"units": [{"layer": 9, "quantity": "cell", "unit": 0}]}', "layer must be an integer in 0..1"),
    (b'{"units": [{"layer": 0, "quantity": "reset", "unit": 0}]}', "no quantity"),
    (b'{"units": [{"layer": 0, "quantity": "cell"}]}', "each entry of units"),
    (json.dumps({"units": [0] * 17}).encode(), "at most 16 may be traced"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_BODIES, ids=[m for _, m in BAD_BODIES])
def test_a_bad_generate_request_is_one_line(client: Client, raw: bytes, message: str) -> None:
    answer = refused(client, 400, raw=raw)
    assert message in answer["error"]
    assert "--" not in answer["error"]  # a request's settings are named by field, not by flag


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"text": "Ω and more"}'.encode(), "never saw"),
        (b'{"text": 5}', "text must be a string"),
        (b'{"txt": "a"}', "unknown field 'txt'"),
        (b"{}", "score needs a text"),
    ],
)
def test_a_bad_score_request_is_one_line(client: Client, raw: bytes, message: str) -> None:
    assert message in refused(client, 400, path="/score", raw=raw)["error"]


def test_unknown_sessions_and_paths(client: Client) -> None:
    assert "no kept state" in refused(client, 404, {"session": "gone"})["error"]
    assert "no such path" in refused(client, 404, {}, path="/nowhere")["error"]
    assert refused(client, 405, method="GET")["error"] == "/generate takes POST, not GET"


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW"]


def test_every_method_on_every_path_is_answered_and_logged(sensitive_run: Path) -> None:
    """A method a path does not take: 405 with Allow, the same JSON as every error, one log line
    (not the standard library's 501, unlogged); HEAD is GET without the body."""
    logged: list[str] = []
    with running(sensitive_run, log=logged.append) as c:
        for path, (taken, _) in Handler.ROUTES.items():
            allowed = "GET, HEAD" if taken == "GET" else taken
            for method in [m for m in METHODS if m not in allowed.split(", ")]:
                connection = c.connection()
                connection.request(method, path, body=b"{}")
                response = connection.getresponse()
                body = response.read()
                connection.close()
                assert response.status == 405 and response.getheader("Allow") == allowed, (method, path)
                if method not in ("GET", "HEAD"):  # a body it may carry is left unread: the connection ends
                    assert response.getheader("Connection") == "close"
                if method == "HEAD":  # the head alone
                    assert body == b"" and response.getheader("Content-Type").startswith("application/json")
                else:
                    answer = json.loads(body)
                    message = answer["error"]["message"] if path.startswith("/v1/") else answer["error"]
                    assert message == f"{path} takes {taken}, not {method}"
                line = f" {method} {path} 405 "
                until(lambda line=line: any(line in logged_line for logged_line in logged), f"{line!r} logged")
        connection = c.connection()
        connection.request("POST", "/nowhere", body=b"{}")
        response = connection.getresponse()
        assert response.status == 404 and response.getheader("Connection") == "close"
        connection.close()
        connection = c.connection()
        connection.request("HEAD", "/health")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("application/json")
        assert response.read() == b"" and int(response.getheader("Content-Length")) > 0
        connection.close()
        c.healthy()


def test_a_body_without_a_length_and_garbage_on_the_wire(client: Client) -> None:
    for raw in (
        b"POST /generate HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /generate HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection((client.host, client.port), timeout=TIMEOUT) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", head), head
        assert "error" in json.loads(body)
    client.healthy()


def test_info_describes_the_model_and_what_a_request_may_ask(trained_run: Path) -> None:
    model = charlstm.load(trained_run)
    with running(trained_run) as client:
        status, info = client.get("/info")
    assert status == 200
    c = model.model.config
    assert info["model"]["cell"] == c.cell and info["model"]["layers"] == c.layers
    assert info["model"]["hidden"] == c.hidden and info["model"]["parameters"] > 0
    assert info["vocabulary"] == {"size": len(model.vocabulary), "characters": model.vocabulary.chars}
    assert info["corpus"].endswith("small.txt")
    defaults = json.loads(json.dumps(asdict(SamplingConfig())))
    assert info["defaults"] == {name: defaults[name] for name in info["defaults"]}
    assert info["limits"]["--max-length"] == ServeConfig().max_length
    assert info["limits"]["--session-ttl"] == ServeConfig().session_ttl
    assert len(info["palette"]["gate"]) == len(info["palette"]["surprise"]) == 101


def test_offered_units_are_the_unit_finders(trained_run: Path) -> None:
    model = charlstm.load(trained_run)
    units, source = offered_units(model)
    assert source.startswith("validation excerpt")
    assert 1 <= len(units) <= 16
    quantities = model.model.kind.quantities
    for u in units:
        assert u["quantity"] in quantities and 0 <= u["layer"] < 2 and 0 <= u["unit"] < 32
        assert -1 <= u["r"] <= 1
    assert {"input", "forget", "output"} <= {u["quantity"] for u in units}


# --- /v1: OpenAI's protocol in the same batch (tests/test_serve_openai.py drives it with the client) ---


def test_completions_join_the_batch_and_only_their_rows_pay_for_logprobs(
    sensitive_run: Path, model: charlstm.Model
) -> None:
    with running(sensitive_run) as c:
        batcher = c.server.batcher
        name = c.get("/v1/models")[1]["data"][0]["id"]
        answers: dict[str, Any] = {}
        completion = {"model": name, "prompt": PRIME, "max_tokens": 40, "seed": 1, "logprobs": 2}
        asks = {
            "completion": lambda: c.post("/v1/completions", completion),
            "generate": lambda: c.post("/generate", {"prime": PRIME, "length": 40, "seed": 2}),
        }
        with batcher.held():
            threads = [threading.Thread(target=lambda k=k: answers.update({k: asks[k]()})) for k in asks]
            for thread in threads:
                thread.start()
            until(lambda: batcher.inbox.qsize() == 2, "both requests to wait together")
            steps_before = batcher.steps
        for thread in threads:
            thread.join(TIMEOUT)
        assert batcher.steps - steps_before == 40  # two samples of 40 characters in 40 batched steps
    (status, drawn), (plain_status, plain) = answers["completion"], answers["generate"]
    assert status == plain_status == 200, (drawn, plain)
    (choice,) = drawn["choices"]
    assert choice["text"] == model.generate(prime=PRIME, length=40, seed=1, temperature=1.0)[0]
    assert len(choice["logprobs"]["top_logprobs"]) == 40 and all(
        2 <= len(t) <= 3 for t in choice["logprobs"]["top_logprobs"]
    )
    (sample,) = plain["samples"]
    assert sample["text"] == model.generate(prime=PRIME, length=40, seed=2)[0] and "logprobs" not in sample


def sse(client: Client, body: dict, headers: dict | None = None) -> list[Any]:
    """A streamed /v1/completions as the data of its events: JSON objects, then "[DONE]"."""
    connection = client.connection()
    try:
        connection.request("POST", "/v1/completions", body=json.dumps(body | {"stream": True}), headers=headers or {})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    finally:
        connection.close()
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1])
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events[:-1]]


def test_an_error_after_a_stream_began_is_openais_error_event(sensitive_run: Path) -> None:
    """Three prompts where the batch has room for two: the first two stream, the third is
    refused, and the stream says so as OpenAI's servers do (the client raises it)."""
    with running(sensitive_run, max_rows=2) as c:
        name = c.get("/v1/models")[1]["data"][0]["id"]
        answers: list[list[Any]] = []
        body = {"model": name, "prompt": ["a", "b", "c"], "max_tokens": 30, "seed": 1}
        with c.server.batcher.held():
            thread = threading.Thread(target=lambda: answers.append(sse(c, body)))
            thread.start()
            until(lambda: c.server.batcher.inbox.qsize() == 3, "the three prompts to be queued")
        thread.join(TIMEOUT)
        c.healthy()
    (events,) = answers
    texts = [e for e in events[:-2] if "choices" in e]
    assert {e["choices"][0]["index"] for e in texts} == {0, 1}
    assert events[-2]["error"]["code"] == "rate_limit_exceeded" and "--max-rows 2" in events[-2]["error"]["message"]
    assert events[-1] == "[DONE]"


def test_the_api_key_guards_v1_only(sensitive_run: Path) -> None:
    from charlstm.serve_openai import authorized

    with running(sensitive_run, api_key="s3cret") as c:
        status, answer = c.get("/v1/models")
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert c.generate(prime=PRIME, length=5, seed=1)[0]["characters"] == 5  # /generate asks no key
        name = c.request("GET", "/v1/models", headers={"Authorization": "Bearer s3cret"})[1]["data"][0]["id"]
        events = sse(c, {"model": name, "max_tokens": 5}, headers={"Authorization": "Bearer s3cret"})
        assert events[-1] == "[DONE]"
    assert authorized("Bearer s3cret", "s3cret") and authorized("bearer s3cret", "s3cret")
    for header in (None, "", "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2", "Bearer"):
        assert not authorized(header, "s3cret"), header


def test_listening_beyond_the_machine_is_said_in_one_line() -> None:
    assert exposure(ServeConfig()) is None and exposure(ServeConfig(host="::1")) is None
    bare, keyed = exposure(ServeConfig(host="0.0.0.0")), exposure(ServeConfig(host="0.0.0.0", api_key="k"))
    assert "anyone" in bare and "--api-key" in bare
    assert "/v1/* asks for the API key" in keyed and "/generate" in keyed
    assert "\n" not in bare + keyed


# --- the docs' example and the command ---------------------------------------------------


def test_the_urllib_example_in_the_docs_runs(client: Client) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text(encoding="utf-8")
    example = docs.split("<!-- urllib example -->")[1].split("```python\n")[1].split("```")[0]
    url = f"http://{client.host}:{client.port}"
    code = example.replace("http://127.0.0.1:8000", url).replace('"ROMEO:"', repr(PRIME))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def first_line(process: subprocess.Popen, limit: float) -> str:
    """The first line `process` prints, or "" if none comes within `limit` seconds."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(limit)
    return lines[0] if lines else ""


def test_the_command_prints_its_address_and_stops_cleanly_on_ctrl_c(trained_run: Path) -> None:
    command = [sys.executable, "-m", "charlstm", "serve", "--checkpoint", str(trained_run), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = first_line(process, TIMEOUT * 2)
        started = r"charlstm serve: http://127\.0\.0\.1:(\d+)/ \(lstm 2x32, .*; \d+ compute threads?\); Ctrl-C stops$"
        match = re.match(started, line)
        assert match, line
        connection = http.client.HTTPConnection("127.0.0.1", int(match[1]), timeout=TIMEOUT)
        connection.request("GET", "/health")
        assert json.loads(connection.getresponse().read())["status"] == "ok"
        connection.close()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert "Traceback" not in err and "charlstm serve: stopped" in err
    assert "GET /health 200" in err


def test_the_command_refuses_bad_settings_in_one_line(trained_run: Path, tmp_path: Path) -> None:
    from tests.helpers import run_cli

    result = run_cli("serve", "--checkpoint", str(trained_run), "--max-length", "0", timeout=TIMEOUT * 2)
    assert result.returncode == 2 and result.stderr.strip() == "charlstm: error: --max-length must be at least 1, got 0"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_cli("serve", "--checkpoint", str(trained_run), "--port", port, timeout=TIMEOUT * 2)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    expected = rf"charlstm: error: cannot listen on 127\.0\.0\.1 port {port}: .*; choose another --port or --host\n"
    assert re.fullmatch(expected, result.stderr)


# --- the playground ------------------------------------------------------------------------


DRAWN = "Array.from(document.querySelectorAll('#output span:not(.prime)'))"
"""The characters the playground has drawn, as spans (the prime is a span of its own)."""


def test_the_playground_streams_coloured_text_and_continues(browser_page: Any, trained_run: Path) -> None:
    from charlstm import inspect_render as render

    model = charlstm.load(trained_run)
    units, _ = offered_units(model)
    with running(trained_run, units=units) as c:
        page = browser_page.open(f"http://{c.host}:{c.port}/")
        page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=TIMEOUT * 1000)
        assert page.locator("#view option").count() == 1 + len(units)
        page.fill("#prime", PRIME)
        page.fill("#length", "120")
        page.click("#generate")
        page.wait_for_function(f"{DRAWN}.length >= 120", timeout=TIMEOUT * 1000)
        page.wait_for_function("!document.getElementById('continue').disabled", timeout=TIMEOUT * 1000)
        assert page.locator("#output .prime").inner_text() == PRIME
        colours = page.evaluate(f"{DRAWN}.map(s => s.style.background)")
        assert all(colours) and len(set(colours)) > 3  # each character coloured by its surprise
        page.select_option("#view", "1")
        page.click("#continue")
        page.wait_for_function(f"{DRAWN}.length >= 240", timeout=TIMEOUT * 1000)
        gate_colours = page.evaluate(f"{DRAWN}.map(s => s.style.background)")
        assert gate_colours[:120] != colours  # recoloured by the unit
        assert "layer" in page.inner_text("#legend")
        # the page's colours are inspect-gates' own, at the palette's steps
        for v in (-1.0, -0.5, 0.0, 0.26, 1.0):
            assert page.evaluate(f"charlstmPlayground.gateColour({v})") == render._rgb(render.colour(v))
        for bits in (0.0, 2.0, 4.0, 8.0, 30.0):
            assert page.evaluate(f"charlstmPlayground.surpriseColour({bits})") == render._rgb(
                render.surprise_colour(bits)
            )
        assert page.evaluate("charlstmPlayground.surpriseColour(null)") == render._rgb(render.surprise_colour(math.nan))
        assert page.evaluate("charlstmPlayground.shade('forget', 0.75, 1)") == 0.5
        assert page.evaluate("charlstmPlayground.shade('cell', -2, 4)") == -0.5
        assert page.evaluate("charlstmPlayground.shade('hidden', 3, 0)") == 1
        browser_page.assert_no_errors()
