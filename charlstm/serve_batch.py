"""The server's model thread: every request's samples drawn together, one character per step.

One thread owns the model's batch, one `sample.Streams`. A request thread reads its prime
(or a continuation's new text) itself, so a long text holds up no one else, then hands the
model thread a `Job` and reads what it draws from the job's queue. Between steps the model
thread admits the jobs that arrived (all of them, so requests that come together share each
batched product: 16 clients cost about one batch of 16 rows, not 16 runs), takes out the rows
of clients that went away, and lets kept states expire. Nothing here knows HTTP: `serve_requests.py`
turns requests into `GenerateRequest`s and `serve.py` events into responses.

A kept state is the finished `sample.Row` itself: its hidden state after the last character
it drew, and its random stream where it stopped. A continuation restarts that row with new
settings, reads any new text, and draws on, so a sample continued in pieces is the same text
as one long sample with the same seed.
"""

from __future__ import annotations

import math
import queue
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch

from charlstm.config import SamplingConfig
from charlstm.model import CharLSTM
from charlstm.sample import PrimedState, Row, Streams, seeds
from charlstm.tokenizer import Vocabulary

IDLE_POLL = 0.25
"""Seconds the idle thread waits for a job before it looks at expiries and at being stopped."""

END = None
"""The last item on a job's queue."""


class Refused(Exception):
    """A request the server will not draw, as an HTTP status and one line (naming the limit, if one)."""

    def __init__(self, status: int, message: str, limit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.limit = status, message, limit

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message} | ({"limit": self.limit} if self.limit else {})


@dataclass(frozen=True)
class Unit:
    """One unit whose value the stream reports at each character: values[step, layer, quantity, unit]
    as `charlstm inspect-gates` records them (quantity: a gate name, then the state names)."""

    layer: int
    quantity: str
    index: int
    """The quantity's position among the cell's gates and states."""
    unit: int


@dataclass(frozen=True)
class GenerateRequest:
    """What one request asks the model thread to draw."""

    config: SamplingConfig
    prime: str
    """The text read before drawing: the prime of a new sample, or the text a continuation reads first ("")."""
    stream: bool = False
    keep: bool = False
    session: str | None = None
    units: tuple[Unit, ...] = ()
    logprobs: int | None = None
    """None, or report each character's ln p and the ln p of this many likeliest characters
    (the rows that ask pay for it, the others do not)."""

    @property
    def rows(self) -> int:
        return 1 if self.session else self.config.num_samples


@dataclass(frozen=True)
class Limits:
    """The batch's limits (from `serve.ServeConfig`), and the option each one is set with."""

    max_rows: int
    max_sessions: int
    session_ttl: float


class Job:
    """One request in the model thread: its rows, and the queue its events go out through.

    Events are JSON-ready dicts: `{"type": "text", "sample": k, "text": ..., "bits": [...]}` as
    characters become certain (streaming requests only; with units also `"values"`, one list
    per character), `{"type": "done", ...}` when sample k ends (`sample.Sample.to_json()`, plus
    `"session"` when kept), `{"type": "error", ...}` when it cannot go on; then `END`. With
    `logprobs`, a streamed text event, or else the done event, also has `"logprobs"`: for each
    character `{"logprob": ln p, "top": {character: ln p}}` (the likeliest, and the one drawn).
    """

    def __init__(self, request: GenerateRequest):
        self.request = request
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled = False
        self.open = request.rows
        self.values: dict[int, list[list[float]]] = {}
        self.logprobs: dict[int, list[dict[str, Any]]] = {}
        self.primed: PrimedState | None = None
        """A new sample's state after its prime, read by the request's thread."""
        self.row: Row | None = None
        """A continuation's kept row, claimed from the kept states, its new text read."""
        self.before: PrimedState | None = None
        """The claimed row's state before that text, to keep again if the job is refused."""

    def cancel(self) -> None:
        """The client went away: its rows leave the batch before the next step."""
        self.cancelled = True

    def fail(self, refused: Refused) -> None:
        self.events.put({"type": "error", "status": refused.status} | refused.to_json())
        self.events.put(END)

    def wait(self, alive: Callable[[], bool], poll: float = 1.0) -> Iterator[list[dict[str, Any]]]:
        """The job's events as they come, in the bunches they queued up in (a writer sends a
        bunch at once); an error event if the model thread stops first."""
        while True:
            try:
                events = [self.events.get(timeout=poll)]
            except queue.Empty:
                if alive():
                    continue
                yield [{"type": "error", "status": 503, "error": "the server is stopping"}]
                return
            while events[-1] is not END and not self.events.empty():
                events.append(self.events.get_nowait())
            if events[-1] is END:
                if events[:-1]:
                    yield events[:-1]  # type: ignore[misc]
                return
            yield events  # type: ignore[misc]


class _Tap:
    """The batch's `Stepper`, remembering what its last step in the model thread returned:
    `Streams.step` makes one `stepper.step` call for its rows in order, and the gates of that
    call are what the playground colours by. Request threads reading primes step too; their
    steps are not remembered."""

    def __init__(self, stepper: Any):
        self.stepper = stepper
        self.owner = threading.get_ident()
        self.last: tuple[Any, list, list] | None = None

    def step(self, ids: torch.Tensor, state: list) -> Any:
        result = self.stepper.step(ids, state)
        if threading.get_ident() == self.owner:
            self.last = result
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stepper, name)


@dataclass
class _Kept:
    row: Row
    expires: float


class Batcher:
    """The model thread: `submit` a `GenerateRequest`, read the `Job`'s events.

    `clock` (monotonic seconds) decides when kept states expire; tests hand in their own.
    """

    def __init__(
        self, model: CharLSTM, vocabulary: Vocabulary, limits: Limits, clock: Callable[[], float] | None = None
    ):
        import time

        self.model, self.vocabulary, self.limits = model, vocabulary, limits
        self.clock = clock or time.monotonic
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.sessions: OrderedDict[str, _Kept] = OrderedDict()
        self.claimed: set[str] = set()
        """Kept states a continuation has taken out, until the model thread admits it."""
        self.lock = threading.Lock()
        """Guards `sessions` and `claimed`, which request threads claim from."""
        self.steps = 0
        """Batched steps taken so far (one character for every live row each)."""
        self.stopping = threading.Event()
        self._go, self._parked = threading.Event(), threading.Event()
        self._go.set()
        self._fresh_batch()
        self.thread = threading.Thread(target=self._run, name="charlstm-model", daemon=True)

    # --- what request threads call ---------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.stopping.is_set()

    def submit(self, request: GenerateRequest) -> Job:
        """Read the request's text in this (the caller's) thread, then queue it for the batch;
        `Refused` when the server is stopping or a continuation's state is not kept."""
        if not self.alive():
            raise Refused(503, "the server is stopping")
        job = Job(request)
        streams = self.streams
        if request.session is None:
            start = (streams.stepper.initial_state(), torch.zeros(1, len(self.vocabulary), device=streams.device))
            job.primed = streams.read(start, request.prime)
        else:
            job.row = self._claim(request.session)
            job.before = (job.row.state, job.row.logits)
            if request.prime:
                job.row.state, job.row.logits = streams.read(job.before, request.prime)
        self.inbox.put(job)
        return job

    def _claim(self, session: str) -> Row:
        with self.lock:
            kept = self.sessions.pop(session, None)
            if kept is not None and kept.expires <= self.clock():
                kept = None  # expired, and the model thread has not swept it out yet
            if kept is None:
                raise Refused(
                    404,
                    f"no kept state {session!r}: it expired (--session-ttl), was continued already "
                    "without keep, is being continued now, or never existed",
                )
            self.claimed.add(session)
            return kept.row

    def _unclaim(self, job: Job) -> None:
        """A refused continuation's state is kept again, as it was before the request."""
        session, row = job.request.session, job.row
        assert session is not None and row is not None and job.before is not None
        row.state, row.logits = job.before
        with self.lock:
            self.claimed.discard(session)
            self.sessions[session] = _Kept(row, self.clock() + self.limits.session_ttl)

    def drawing(self) -> int:
        """Rows in the batch now."""
        return len(self.streams)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step; every job still waiting or drawing gets a 503 error."""
        self.stopping.set()
        self._go.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        stopping = Refused(503, "the server is stopping")
        for job in {row.key[0] for row in self.streams.rows}:
            job.fail(stopping)
        while not self.inbox.empty():
            self.inbox.get_nowait().fail(stopping)

    @contextmanager
    def held(self, timeout: float = 10.0) -> Iterator[None]:
        """Hold the thread between steps (jobs submitted meanwhile wait), then let it go: they are
        admitted together. For tests and benchmarks that need a batch formed exactly."""
        self._go.clear()
        try:
            if self.thread.is_alive() and not self._parked.wait(timeout):
                raise RuntimeError("the model thread did not pause")
            yield
        finally:
            self._go.set()

    # --- the thread ------------------------------------------------------------------

    def _fresh_batch(self) -> None:
        self.streams = Streams(self.model, self.vocabulary)
        self.tap = _Tap(self.streams.stepper)
        self.streams.stepper = self.tap

    def _run(self) -> None:
        self.tap.owner = threading.get_ident()
        while not self.stopping.is_set():
            if not self._go.is_set():
                self._parked.set()
                self._go.wait()
                self._parked.clear()
                continue
            first = None
            if not self.streams and not self.streams.finished:
                with suppress(queue.Empty):
                    first = self.inbox.get(timeout=IDLE_POLL)
            try:
                self._expire()
                self._admit(first)
                self._drop_cancelled()
                self._step()
            except Exception as e:  # a bug must not take the server down: fail the batch, start afresh
                failure = Refused(500, f"internal error while drawing: {type(e).__name__}: {e}")
                for job in {row.key[0] for row in [*self.streams.rows, *self.streams.finished]}:
                    job.fail(failure)
                self._fresh_batch()
                self.tap.owner = threading.get_ident()

    def _admit(self, first: Job | None) -> None:
        jobs = [first] if first is not None else []
        while True:
            try:
                jobs.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        fresh: list[Row] = []
        for job in jobs:
            try:
                fresh += self._rows_for(job, len(fresh))
            except Refused as refused:
                if job.row is not None:
                    self._unclaim(job)
                job.fail(refused)
        self.streams.extend(fresh)

    def _rows_for(self, job: Job, admitted: int) -> list[Row]:
        """The rows `job` draws: new ones from its read prime, or its continued row."""
        request, limits = job.request, self.limits
        busy = len(self.streams) + admitted
        if busy + request.rows > limits.max_rows:
            raise Refused(
                429,
                f"the server is drawing {busy} samples, and {request.rows} more would pass --max-rows "
                f"{limits.max_rows}; try again shortly",
                "--max-rows",
            )
        if job.row is not None:
            with self.lock:
                self.claimed.discard(request.session)  # type: ignore[arg-type]
            job.row.key = (job, 0)
            job.row.restart(request.config)
            return [job.row]
        if request.keep:
            with self.lock:
                kept = len(self.sessions) + len(self.claimed)
            kept += sum(1 for row in self.streams.rows if row.key[0].request.keep)
            if kept + request.rows > limits.max_sessions:
                raise Refused(
                    429,
                    f"{kept} states are kept, and {request.rows} more would pass --max-sessions "
                    f"{limits.max_sessions}; continue one without keep, or wait for one to expire",
                    "--max-sessions",
                )
        assert job.primed is not None
        return [Row(request.config, seed, job.primed, (job, k)) for k, seed in enumerate(seeds(request.config))]

    def _expire(self) -> None:
        now = self.clock()
        with self.lock:
            while self.sessions:
                key, kept = next(iter(self.sessions.items()))
                if kept.expires > now:
                    break
                del self.sessions[key]

    def _drop_cancelled(self) -> None:
        for row in [row for row in self.streams.rows if row.key[0].cancelled]:
            self.streams.take(row)

    def _step(self) -> None:
        rows = list(self.streams.rows)
        likeliest = self._likeliest(rows)
        finished = self.streams.step()
        if rows:
            self.steps += 1
            self._record(rows)
        if likeliest:
            self._record_logprobs(likeliest)
        for row in rows:
            job, k = row.key
            if job.request.stream and not job.cancelled:
                self._send_text(job, k, row)
        for row in finished:
            self._finish(row)

    def _record(self, rows: list[Row]) -> None:
        """Each traced unit's value at the character every row just read (the tap's last step)."""
        assert self.tap.last is not None
        _, state, gates = self.tap.last
        columns: dict[tuple[int, int], list[float]] = {}
        for i, row in enumerate(rows):
            job, k = row.key
            if not job.request.units or not job.request.stream:
                continue
            values = []
            for u in job.request.units:
                if (u.layer, u.index) not in columns:
                    quantities = (*gates[u.layer], *state[u.layer])
                    columns[(u.layer, u.index)] = quantities[u.index].float().cpu()
                values.append(round(float(columns[(u.layer, u.index)][i, u.unit]), 4))
            job.values.setdefault(k, []).append(values)

    def _likeliest(self, rows: list[Row]) -> list[tuple[Row, dict[str, float]]]:
        """Before a step: for each row that asks for logprobs, its likeliest next characters
        and their ln p under the model (temperature 1), from the logits it draws from. Only
        those rows' logits are read, so a batch with none of them costs nothing more."""
        asking = [i for i, row in enumerate(rows) if row.key[0].request.logprobs is not None]
        if not asking:
            return []
        wanted = [rows[i].key[0].request.logprobs for i in asking]
        logprobs = torch.log_softmax(self.streams.logits[asking].float(), dim=1)
        top = logprobs.topk(min(max(wanted), logprobs.shape[1]), dim=1)
        ids, values, chars = top.indices.tolist(), top.values.tolist(), self.vocabulary.chars
        return [
            (rows[i], {chars[c]: v for c, v in zip(ids[j][:n], values[j][:n], strict=True)})
            for j, (i, n) in enumerate(zip(asking, wanted, strict=True))
        ]

    @staticmethod
    def _record_logprobs(likeliest: list[tuple[Row, dict[str, float]]]) -> None:
        """After a step: the character each asking row drew, its ln p (the same number as its
        bits), and the likeliest alternatives with the drawn one among them."""
        for row, top in likeliest:
            job, k = row.key
            drawn, logprob = row.chars[-1], -row.nats[-1]
            job.logprobs.setdefault(k, []).append({"logprob": logprob, "top": top | {drawn: logprob}})

    def _send_text(self, job: Job, k: int, row: Row) -> None:
        start = row.emitted
        piece = row.new_text()
        if not piece:
            return
        end = start + len(piece)
        event: dict[str, Any] = {
            "type": "text",
            "sample": k,
            "text": piece,
            "bits": [round(n / math.log(2), 4) for n in row.nats[start:end]],
        }
        if job.request.units:
            event["values"] = job.values.get(k, [])[start:end]
        if job.request.logprobs is not None:
            event["logprobs"] = job.logprobs.get(k, [])[start:end]
        job.events.put(event)

    def _finish(self, row: Row) -> None:
        job, k = row.key
        job.values.pop(k, None)
        logprobs = job.logprobs.pop(k, [])
        event: dict[str, Any] = {"type": "done"} | row.sample(job.request.prime, k).to_json()
        del event["novel"], event["redraws"]
        if job.request.logprobs is not None and not job.request.stream:
            event["logprobs"] = logprobs[: event["characters"]]
        if job.request.keep and not job.cancelled:
            session = job.request.session or secrets.token_urlsafe(12)
            row.key = None
            row.restart()  # its text is sent; the state and random stream are what is kept
            with self.lock:
                self.sessions[session] = _Kept(row, self.clock() + self.limits.session_ttl)
            event["session"] = session
        job.events.put(event)
        job.open -= 1
        if job.open == 0:
            job.events.put(END)
