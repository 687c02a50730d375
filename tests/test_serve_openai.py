"""`charlstm serve`'s OpenAI protocol, driven by the official `openai` client against a real
`charlstm serve` process (started as a user starts it, with its key in CHARLSTM_API_KEY):
completions whole and streamed, n choices with stop strings, a list of prompts, logprobs,
errors as the client's own exceptions, and the same seed drawing what `charlstm sample` draws.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import charlstm
from charlstm.serve_config import ServeConfig

KEY = "test-key"
"""The server's API key (the client sends it as `Authorization: Bearer KEY`)."""

TIMEOUT = 60.0
PROMPT = "The "


@pytest.fixture(scope="module")
def server_url(trained_run: Path) -> Iterator[str]:
    """`charlstm serve` on a free loopback port, its key from the environment; its base URL."""
    command = [sys.executable, "-m", "charlstm", "serve", "--checkpoint", str(trained_run), "--port", "0", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHARLSTM_API_KEY": KEY}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    try:
        match = re.match(r"charlstm serve: (http://127\.0\.0\.1:\d+/) ", lines[0] if lines else "")
        assert match, (lines, process.poll())
        yield match[1]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
        assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def client(server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server_url + "v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def model(trained_run: Path) -> charlstm.Model:
    return charlstm.load(trained_run)


@pytest.fixture(scope="module")
def name(trained_run: Path) -> str:
    return trained_run.name


def test_models_lists_the_run(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    (listed,) = client.models.list().data
    assert listed.id == name and listed.owned_by == "charlstm"
    facts = listed.model_dump()
    assert facts["token"] == "character" and facts["max_tokens"] == ServeConfig().max_length
    assert facts["layers"] == model.model.config.layers and facts["hidden"] == model.model.config.hidden


def test_a_completion_is_what_the_python_api_draws(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    completion = client.completions.create(model=name, prompt=PROMPT, max_tokens=40, seed=3, temperature=0.9)
    (choice,) = completion.choices
    assert choice.text == model.generate(prime=PROMPT, length=40, seed=3, temperature=0.9)[0]
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    assert completion.object == "text_completion" and completion.model == name and completion.id.startswith("cmpl-")
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (len(PROMPT), 40, len(PROMPT) + 40)


def test_defaults_are_openais(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    """max_tokens 16 and temperature 1 when left out, as a client written for OpenAI expects."""
    (choice,) = client.completions.create(model=name, prompt=PROMPT, seed=4).choices
    assert choice.text == model.generate(prime=PROMPT, length=16, seed=4, temperature=1.0)[0]


def test_n_choices_end_at_stop_strings(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    completion = client.completions.create(
        model=name, prompt=PROMPT, max_tokens=300, n=4, stop=["e", "a"], seed=2, temperature=1.0
    )
    expected = model.generate(prime=PROMPT, length=300, num_samples=4, stop=("e", "a"), seed=2, temperature=1.0)
    assert [c.text for c in completion.choices] == expected
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "stop" for c in completion.choices)
    assert completion.usage.completion_tokens == sum(len(text) + 1 for text in expected)  # each drew its stop


def test_a_list_of_prompts_is_a_choice_set_each(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    prompts = [PROMPT, "It "]
    completion = client.completions.create(model=name, prompt=prompts, max_tokens=30, n=2, seed=7, echo=True)
    texts = [c.text for c in completion.choices]
    for j, prompt in enumerate(prompts):
        drawn = model.generate(prime=prompt, length=30, num_samples=2, seed=7 + 2 * j, temperature=1.0)
        assert texts[2 * j : 2 * j + 2] == [prompt + text for text in drawn]
    assert completion.usage.prompt_tokens == len(PROMPT) + len("It ")


def test_a_stream_read_through_the_clients_iterator(client: openai.OpenAI, name: str) -> None:
    settings = {"model": name, "prompt": [PROMPT, "It "], "max_tokens": 60, "n": 2, "seed": 5, "stop": "\n\n"}
    whole = client.completions.create(**settings)
    pieces: dict[int, str] = {}
    finished: dict[int, str] = {}
    chunks = list(client.completions.create(**settings, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        assert choice.index not in finished
        pieces[choice.index] = pieces.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert len(chunks) > 4 * 2  # text came in pieces, not one chunk a choice
    assert pieces == {c.index: c.text for c in whole.choices}
    assert finished == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_logprobs_are_the_models_exactly(client: openai.OpenAI, name: str, model: charlstm.Model) -> None:
    import torch

    completion = client.completions.create(model=name, prompt=PROMPT, max_tokens=50, seed=6, logprobs=3)
    (choice,) = completion.choices
    logprobs, text = choice.logprobs, choice.text
    assert logprobs.tokens == list(text) and logprobs.text_offset == list(range(len(text)))
    ids = model.vocabulary.encode(PROMPT + text).long()
    with torch.no_grad():
        logits, _ = model.model.eval()(ids[None, :-1])
    expected = torch.log_softmax(logits[0, len(PROMPT) - 1 :].float(), dim=1)  # what each character was drawn from
    chars = model.vocabulary.chars
    for t, (token, logprob, top) in enumerate(zip(text, logprobs.token_logprobs, logprobs.top_logprobs, strict=True)):
        assert logprob == pytest.approx(float(expected[t, chars.index(token)]), abs=1e-4)
        assert top[token] == logprob and len(top) in (3, 4)  # the 3 likeliest, and the one drawn
        fourth = float(expected[t].topk(4).values[3])
        assert all(lp >= fourth - 1e-4 for lp in sorted(top.values(), reverse=True)[:3])
        for ch, lp in top.items():
            assert lp == pytest.approx(float(expected[t, chars.index(ch)]), abs=1e-4)
    streamed = client.completions.create(model=name, prompt=PROMPT, max_tokens=50, seed=6, logprobs=3, stream=True)
    chunks = [chunk.choices[0].logprobs for chunk in streamed if chunk.choices[0].logprobs]
    assert [t for c in chunks for t in c.tokens] == logprobs.tokens
    assert [o for c in chunks for o in c.text_offset] == logprobs.text_offset
    assert [lp for c in chunks for lp in c.token_logprobs] == logprobs.token_logprobs


def test_the_same_seed_draws_what_charlstm_sample_draws(client: openai.OpenAI, name: str, trained_run: Path) -> None:
    """Choice i of a completion uses seed + i, as sample i of `charlstm sample -N`."""
    from tests.helpers import run_cli

    result = run_cli("sample", "--checkpoint", str(trained_run), "-p", PROMPT, "-n", "80", "--seed", "11", "-t", "1")
    assert result.returncode == 0, result.stderr
    (choice,) = client.completions.create(model=name, prompt=PROMPT, max_tokens=80, seed=11).choices
    assert result.stdout == PROMPT + choice.text + "\n"


@pytest.mark.parametrize(
    ("settings", "param", "message"),
    [
        ({"max_tokens": 10_001}, "max_tokens", "max_tokens 10001 is above this server's --max-length 10000"),
        ({"max_tokens": -1}, "max_tokens", "max_tokens must be >= 0"),
        ({"n": 65}, "n", "above this server's --max-samples 64"),
        ({"prompt": "Ωmega"}, "prompt", "the prompt has characters the model never saw: 'Ω'"),
        ({"prompt": [1, 2, 3]}, "prompt", "not token ids"),
        ({"temperature": -1}, "temperature", "temperature must be a number >= 0"),
        ({"stop": "Ω"}, "stop", "stop 'Ω' has characters the model never saw"),
        ({"logprobs": 6}, "logprobs", "logprobs must be in 0..5"),
        ({"echo": True, "logprobs": 1}, "echo", "echo with logprobs is not supported"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported"),
        ({"suffix": "end"}, "suffix", "not supported"),
        ({"best_of": 3}, "best_of", "best_of must equal n"),
        ({"extra_body": {"tempreture": 1}}, "tempreture", "Unrecognized request argument supplied: tempreture"),
    ],
)
def test_a_bad_request_is_the_clients_bad_request_error(
    client: openai.OpenAI, name: str, settings: dict, param: str | None, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(**({"model": name, "prompt": PROMPT} | settings))
    error = raised.value.body
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    assert "\n" not in error["message"]


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    assert raised.value.body["code"] == "model_not_found"


def test_a_wrong_or_missing_key_is_the_clients_authentication_error(server_url: str, name: str) -> None:
    for key in ("wrong-key", KEY + "-and-more", KEY[:-1]):
        stranger = openai.OpenAI(base_url=server_url + "v1", api_key=key, max_retries=0, timeout=TIMEOUT)
        with pytest.raises(openai.AuthenticationError) as raised:
            stranger.completions.create(model=name, prompt=PROMPT)
        assert raised.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(server_url + "v1/models", timeout=TIMEOUT)  # no Authorization at all
    assert raised.value.code == 401 and raised.value.headers["WWW-Authenticate"] == "Bearer"


def test_the_docs_openai_example_runs(server_url: str) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text(encoding="utf-8")
    example = docs.split("<!-- openai example -->")[1].split("```python\n")[1].split("```")[0]
    assert len(example.strip().splitlines()) <= 6  # the client in five lines, and its import
    code = example.replace("http://127.0.0.1:8000/", server_url).replace('"ROMEO:"', repr(PROMPT))
    code = code.replace('api_key="KEY"', f"api_key={KEY!r}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_text_that_queued_up_together_is_one_chunk_a_choice() -> None:
    """When the client reads slower than the batch draws, each choice's waiting characters go
    out as one chunk (offsets and logprobs joined with them), still before its finish."""
    import json

    from charlstm.serve_openai import Completions
    from charlstm.tokenizer import Vocabulary

    completions = Completions(
        {"model": "m", "prompt": "ab", "n": 2, "stream": True}, "m", ServeConfig(), Vocabulary("abc")
    )

    def text(k: int, piece: str) -> dict:
        records = [{"logprob": -1.0, "top": {ch: -1.0}} for ch in piece]
        return {"type": "text", "sample": k, "text": piece, "bits": [1.4] * len(piece), "logprobs": records}

    done = {"type": "done", "sample": 0, "text": "ac", "characters": 2, "stop": None, "stop_reason": "length"}
    bunch = [text(0, "a"), text(1, "b"), text(0, "c"), done, text(1, "cc")]
    events = [json.loads(line.removeprefix("data: ")) for line in completions.sse(bunch).split("\n\n")[:-1]]
    choices = [e["choices"][0] for e in events]
    assert [(c["index"], c["text"], c["finish_reason"]) for c in choices] == [
        (0, "ac", None),
        (1, "bcc", None),
        (0, "", "length"),
    ]
    assert choices[1]["logprobs"]["text_offset"] == [0, 1, 2] and choices[1]["logprobs"]["tokens"] == ["b", "c", "c"]
    assert [e["sample"] for e in bunch] == [0, 1, 0, 0, 1] and bunch[0][
        "text"
    ] == "a"  # the events themselves unchanged
