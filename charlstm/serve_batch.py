"""The server's model thread: every request's samples drawn together, one character per step.

One thread owns the model and one `sample.Streams` batch. A request thread hands it a `Job`
and reads what it draws from the job's queue. Between steps the thread admits the jobs that
arrived (all of them, so requests that come together share each batched product: 16 clients
cost about one batch of 16 rows, not 16 runs), continues kept states, takes out the rows of
clients that went away, and lets kept states expire. Nothing here knows HTTP: `serve.py`
turns requests into `GenerateRequest`s and events into responses.

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
from charlstm.sample import Row, Streams, seeds
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
    `"session"` when kept), `{"type": "error", ...}` when it cannot go on; then `END`.
    """

    def __init__(self, request: GenerateRequest):
        self.request = request
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled = False
        self.open = request.rows
        self.values: dict[int, list[list[float]]] = {}

    def cancel(self) -> None:
        """The client went away: its rows leave the batch before the next step."""
        self.cancelled = True

    def fail(self, refused: Refused) -> None:
        self.events.put({"type": "error", "status": refused.status} | refused.to_json())
        self.events.put(END)

    def wait(self, alive: Callable[[], bool], poll: float = 1.0) -> Iterator[dict[str, Any]]:
        """The job's events as they come; an error event if the model thread stops first."""
        while True:
            try:
                event = self.events.get(timeout=poll)
            except queue.Empty:
                if alive():
                    continue
                yield {"type": "error", "status": 503, "error": "the server is stopping"}
                return
            if event is END:
                return
            yield event


class _Tap:
    """The batch's `Stepper`, remembering what its last step returned: `Streams.step` makes
    one `stepper.step` call for its rows in order, and the gates of that call are what the
    playground colours by (a continuation's or prime's reading also passes here, but the
    model thread reads `last` only right after `Streams.step`)."""

    def __init__(self, stepper: Any):
        self.stepper = stepper
        self.last: tuple[Any, list, list] | None = None

    def step(self, ids: torch.Tensor, state: list) -> Any:
        self.last = self.stepper.step(ids, state)
        return self.last

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
        job = Job(request)
        if not self.alive():
            job.fail(Refused(503, "the server is stopping"))
        else:
            self.inbox.put(job)
        return job

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
                job.fail(refused)
        self.streams.extend(fresh)

    def _rows_for(self, job: Job, admitted: int) -> list[Row]:
        """New rows for `job` (a continuation joins the batch here and returns none)."""
        request, limits = job.request, self.limits
        busy = len(self.streams) + admitted
        if busy + request.rows > limits.max_rows:
            raise Refused(
                429,
                f"the server is drawing {busy} samples, and {request.rows} more would pass --max-rows "
                f"{limits.max_rows}; try again shortly",
                "--max-rows",
            )
        if request.session is not None:
            kept = self.sessions.pop(request.session, None)
            if kept is None:
                raise Refused(
                    404,
                    f"no kept state {request.session!r}: it expired (--session-ttl), was continued already "
                    "without keep, or never existed",
                )
            row = kept.row
            row.key = (job, 0)
            row.restart(request.config)
            self.streams.add(row, request.prime)
            return []
        if request.keep:
            kept_later = sum(1 for row in self.streams.rows if row.key[0].request.keep)
            if len(self.sessions) + kept_later + request.rows > limits.max_sessions:
                raise Refused(
                    429,
                    f"{len(self.sessions) + kept_later} states are kept, and {request.rows} more would pass "
                    f"--max-sessions {limits.max_sessions}; continue one without keep, or wait for one to expire",
                    "--max-sessions",
                )
        return [self.streams.row(request.config, seed, key=(job, k)) for k, seed in enumerate(seeds(request.config))]

    def _expire(self) -> None:
        now = self.clock()
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
        finished = self.streams.step()
        if rows:
            self.steps += 1
            self._record(rows)
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
            if not job.request.units:
                continue
            values = []
            for u in job.request.units:
                if (u.layer, u.index) not in columns:
                    quantities = (*gates[u.layer], *state[u.layer])
                    columns[(u.layer, u.index)] = quantities[u.index].float().cpu()
                values.append(round(float(columns[(u.layer, u.index)][i, u.unit]), 4))
            job.values.setdefault(k, []).append(values)

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
        job.events.put(event)

    def _finish(self, row: Row) -> None:
        job, k = row.key
        job.values.pop(k, None)
        event: dict[str, Any] = {"type": "done"} | row.sample(job.request.prime, k).to_json()
        del event["novel"], event["redraws"]
        if job.request.keep and not job.cancelled:
            session = job.request.session or secrets.token_urlsafe(12)
            row.key = None
            self.sessions[session] = _Kept(row, self.clock() + self.limits.session_ttl)
            event["session"] = session
        job.events.put(event)
        job.open -= 1
        if job.open == 0:
            job.events.put(END)
