"""OpenAI's completions protocol on `charlstm serve`: `POST /v1/completions`, `GET /v1/models`.

The protocol that llama.cpp, vLLM, text-generation-inference and Ollama also speak, so the
`openai` clients, LangChain and curl recipes work by changing one base URL. This module is the
mapping only: a request becomes the /generate bodies it means (one per prompt, `n` samples
each), `serve_requests.py` checks them and `serve.py` draws them through the same batch as
/generate, and the events come back here to be shaped as OpenAI's answers: one JSON object,
or server-sent events ending in `data: [DONE]`. No HTTP and no model here.

A token is one character: `max_tokens`, `logprobs` and `usage` count characters.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlstm.errors import CharlstmError
from charlstm.serve_batch import Refused

if TYPE_CHECKING:
    from charlstm.serve_config import ServeConfig
    from charlstm.tokenizer import Vocabulary

OPENAI_DEFAULTS = {"max_tokens": 16, "temperature": 1.0}
"""OpenAI's own defaults for the fields where they differ from `charlstm sample`'s, so a client
written for OpenAI draws what it expects when it leaves them out (or sends null)."""

MAX_LOGPROBS = 5
"""The most alternatives `logprobs` may ask for at each character (OpenAI's limit)."""

NAMES = {"prime": "prompt", "length": "max_tokens", "num_samples": "n", "min_length": "min_tokens"}
"""How this protocol names the /generate settings it sets (the rest keep their names), so a
refusal from the shared checks names the field the client sent."""

PASSED_ON = {"top_p": "top_p", "top_k": "top_k", "stop": "stop", "min_length": "min_tokens"}
"""The /generate settings a completions request sets as they are: ours -> its field."""

FIELDS = {
    "model": "a string",
    "prompt": "a string or a list of strings",
    "max_tokens": "an integer",
    "temperature": "a number",
    "top_p": "a number",
    "n": "an integer",
    "stop": "a string or a list of strings",
    "seed": "an integer",
    "stream": "true or false",
    "stream_options": "an object",
    "logprobs": "an integer",
    "echo": "true or false",
    "user": "a string",
    "suffix": "a string",
    "best_of": "an integer",
    "frequency_penalty": "a number",
    "presence_penalty": "a number",
    "logit_bias": "an object",
    "top_k": "an integer",
    "min_tokens": "an integer",
}
"""Every field a completions request may send, with its JSON type (null for any: left out).
`top_k` and `min_tokens` are vLLM's extensions; the penalties, `logit_bias`, `best_of` and
`suffix` are taken only where they change nothing, since a client would be misled otherwise."""


class Invalid(Refused):
    """A request refused in OpenAI's terms: the field at fault (`param`) and, where OpenAI has
    one, its error code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(status, message)
        self.param, self.code = param, code


def error_json(refused: Refused) -> dict[str, Any]:
    """Any refusal in OpenAI's error shape, which the `openai` clients raise as their own exceptions."""
    status = refused.status
    return {
        "error": {
            "message": refused.message,
            "type": "server_error" if status >= 500 else "invalid_request_error",
            "param": getattr(refused, "param", None) or _field_named(refused.message),
            "code": getattr(refused, "code", None) or {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status),
        }
    }


def _field_named(message: str) -> str | None:
    """The field a refusal of the shared checks is about: they begin with its name
    (`max_tokens must be >= 0`, `n 65 is above this server's --max-samples 64`)."""
    first = message.split(" ", 1)[0]
    return first if first in FIELDS else None


def authorized(header: str | None, key: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <key>`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def model_id(checkpoint: Path) -> str:
    """The name clients ask for: the run's (its folder's) for a run's best.pt or last.pt, else the file's."""
    from charlstm.checkpoint import BEST, LAST

    return checkpoint.parent.name if checkpoint.name in (BEST, LAST) else checkpoint.stem


def models(name: str, checkpoint: Path, facts: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    """GET /v1/models: the one model served, OpenAI's fields first, then what a client of a
    character model needs to know."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": int(checkpoint.stat().st_mtime),
                "owned_by": "charlstm",
                "token": "character",
                "max_tokens": config.max_length,
                "max_n": config.max_samples,
            }
            | facts
        ],
    }


def _is(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "a string": isinstance(value, str),
        "an integer": number and isinstance(value, int),
        "a number": number,
        "true or false": isinstance(value, bool),
        "an object": isinstance(value, dict),
        "a string or a list of strings": isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
    }[kind]


def _given(body: dict[str, Any]) -> dict[str, Any]:
    """The fields `body` sets (null is left out), each known and of its type."""
    for name, value in body.items():
        if name not in FIELDS:
            raise Invalid(400, f"Unrecognized request argument supplied: {name}", name)
        if value is not None and not _is(value, FIELDS[name]):
            hint = " (this model reads characters, not token ids)" if name == "prompt" else ""
            raise Invalid(400, f"{name} must be {FIELDS[name]}{hint}, got {json.dumps(value)[:40]}", name)
    return {name: value for name, value in body.items() if value is not None}


def _refuse_what_misleads(given: dict[str, Any], n: int) -> None:
    """Fields this server takes only where they change nothing: a client would otherwise think
    they had been applied."""
    if given.get("suffix"):
        raise Invalid(400, "suffix is not supported: a model that reads left to right cannot fill a gap", "suffix")
    if given.get("best_of", n) != n:
        raise Invalid(400, f"best_of must equal n ({n}) here: every choice drawn is returned", "best_of")
    for name in ("frequency_penalty", "presence_penalty"):
        if given.get(name, 0) != 0:
            raise Invalid(400, f"{name} is not supported; leave it out or send 0", name)
    if given.get("logit_bias"):
        raise Invalid(400, "logit_bias is not supported; leave it out or send {}", "logit_bias")


class Completions:
    """One /v1/completions request, read and checked (`Invalid` says what is wrong, in OpenAI's
    terms): `bodies` are the /generate bodies it draws, one per prompt; `events`, `sse` and
    `response` shape what they draw as OpenAI's answer."""

    def __init__(self, body: dict[str, Any], name: str, config: ServeConfig, vocabulary: Vocabulary):
        given = _given(body)
        if "model" not in given:
            raise Invalid(400, f"model is required; this server serves {name!r} (GET /v1/models)", "model")
        if given["model"] != name:
            message = f"The model {given['model']!r} does not exist; this server serves {name!r}"
            raise Invalid(404, message, "model", "model_not_found")
        self.name, self.id, self.created = name, f"cmpl-{secrets.token_hex(12)}", int(time.time())
        prompt = given.get("prompt", "")
        self.prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
        self.n = given.get("n", 1)
        self.echo, self.stream = given.get("echo", False), given.get("stream", False)
        self.logprobs: int | None = given.get("logprobs")
        self.include_usage = self.stream and bool(given.get("stream_options", {}).get("include_usage"))
        self._check(given, config, vocabulary)
        seed = given.get("seed")
        settings = {
            "length": given.get("max_tokens", OPENAI_DEFAULTS["max_tokens"]),
            "temperature": given.get("temperature", OPENAI_DEFAULTS["temperature"]),
            "num_samples": self.n,
            "stream": self.stream,
        } | {ours: given[theirs] for ours, theirs in PASSED_ON.items() if theirs in given}
        self.bodies = [
            settings | {"prime": prompt or None, "seed": None if seed is None else seed + j * self.n}
            for j, prompt in enumerate(self.prompts)
        ]
        self.offsets: dict[int, int] = {}
        """Each choice's characters so far (streaming): the text_offset of its next character."""
        self.drawn = 0
        """Characters drawn so far, over every choice (stop strings included)."""

    def _check(self, given: dict[str, Any], config: ServeConfig, vocabulary: Vocabulary) -> None:
        """What the shared /generate checks cannot see: the request as a whole."""
        _refuse_what_misleads(given, self.n)
        if not self.prompts:
            raise Invalid(400, "prompt is an empty list; give a string or a list of strings", "prompt")
        for prompt in self.prompts:
            try:
                vocabulary.check(prompt, "the prompt")
            except CharlstmError as e:
                raise Invalid(400, str(e), "prompt") from None
        choices = len(self.prompts) * self.n
        if choices > config.max_samples:
            message = f"{len(self.prompts)} prompts x n {self.n} = {choices} choices"
            raise Invalid(400, f"{message} is above this server's --max-samples {config.max_samples}", "n")
        seed = given.get("seed")
        if seed is not None and not (seed >= -(2**63) and seed + choices <= 2**64):
            raise Invalid(400, f"seed must be in -2**63 .. 2**64 - {choices} (the choices), got {seed}", "seed")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise Invalid(400, f"logprobs must be in 0..{MAX_LOGPROBS}, got {self.logprobs}", "logprobs")
        if self.echo and self.logprobs is not None:
            message = "echo with logprobs is not supported: the prompt's own logprobs are not computed"
            raise Invalid(400, message, "echo")

    # --- the answer ---------------------------------------------------------------------

    def events(self, answers: Iterable[Iterable[list[dict[str, Any]]]]) -> Iterator[list[dict[str, Any]]]:
        """Each prompt's events in turn (all are drawn together), sample k of prompt j renumbered
        as choice j * n + k, as OpenAI numbers them."""
        for j, bunches in enumerate(answers):
            for bunch in bunches:
                yield [e | {"sample": j * self.n + e["sample"]} if "sample" in e else e for e in bunch]

    def response(self, done: list[dict[str, Any]]) -> dict[str, Any]:
        """The whole answer, from every choice's done event."""
        choices = []
        for event in sorted(done, key=lambda e: e["sample"]):
            self.drawn += event["characters"] + len(event["stop"] or "")
            echo = self._echo(event["sample"])
            logprobs = self._logprobs(event["text"], event["logprobs"], len(echo)) if "logprobs" in event else None
            choices.append(self._choice(event, echo + event["text"], logprobs, event["stop_reason"]))
        return self._object(choices) | {"usage": self._usage()}

    def sse(self, bunch: list[dict[str, Any]]) -> str:
        """Server-sent events for a bunch of events: a chunk per choice's new text (after its
        prompt, with echo), one with its finish_reason when it ends, an error as OpenAI sends one."""
        lines = []
        for event in _joined(bunch):
            if event["type"] == "error":
                refused = Refused(event["status"], event["error"], event.get("limit"))
                lines.append(json.dumps(error_json(refused), ensure_ascii=False))
                continue
            index = event["sample"]
            if index not in self.offsets:
                self.offsets[index] = len(self._echo(index))
                if self._echo(index):
                    lines.append(self._chunk(event, self._echo(index), None, None))
            if event["type"] == "text":
                offset = self.offsets[index]
                self.offsets[index] += len(event["text"])
                logprobs = self._logprobs(event["text"], event["logprobs"], offset) if "logprobs" in event else None
                lines.append(self._chunk(event, event["text"], logprobs, None))
            else:
                self.drawn += event["characters"] + len(event["stop"] or "")
                lines.append(self._chunk(event, "", None, event["stop_reason"]))
        return "".join(f"data: {line}\n\n" for line in lines)

    def sse_end(self) -> str:
        """The stream's end: a chunk with the usage when stream_options asked for it, then [DONE]."""
        usage = json.dumps(self._object([]) | {"usage": self._usage()}) if self.include_usage else None
        return (f"data: {usage}\n\n" if usage else "") + "data: [DONE]\n\n"

    def _echo(self, index: int) -> str:
        return self.prompts[index // self.n] if self.echo else ""

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.name} | {
            "choices": choices
        }

    def _choice(self, event: dict, text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": event["sample"], "logprobs": logprobs, "finish_reason": finish}

    def _chunk(self, event: dict, text: str, logprobs: dict | None, finish: str | None) -> str:
        return json.dumps(self._object([self._choice(event, text, logprobs, finish)]), ensure_ascii=False)

    def _usage(self) -> dict[str, int]:
        prompt = sum(map(len, self.prompts))
        return {"prompt_tokens": prompt, "completion_tokens": self.drawn, "total_tokens": prompt + self.drawn}

    @staticmethod
    def _logprobs(text: str, records: list[dict[str, Any]], offset: int) -> dict[str, list]:
        """OpenAI's legacy logprobs object for `text`, one character a token, starting at `offset`."""
        return {
            "tokens": list(text),
            "token_logprobs": [r["logprob"] for r in records],
            "top_logprobs": [r["top"] for r in records],
            "text_offset": list(range(offset, offset + len(text))),
        }


def _joined(bunch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`bunch` with the text events of each choice that queued up together joined into the
    first of them: one chunk a choice per bunch, not one per character, when the client reads
    slower than the batch draws."""
    joined: list[dict[str, Any]] = []
    texts: dict[int, dict[str, Any]] = {}
    for event in bunch:
        if event["type"] == "text" and event["sample"] in texts:
            first = texts[event["sample"]]
            first["text"] += event["text"]
            if "logprobs" in first:
                first["logprobs"] = first["logprobs"] + event["logprobs"]
            continue
        if event["type"] == "text":
            event = texts[event["sample"]] = dict(event)
        joined.append(event)
    return joined
