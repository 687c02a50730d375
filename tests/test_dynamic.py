"""Dynamic evaluation and adapted sampling: no character helps predict itself, a text with
structure gains, results repeat exactly, and nothing is written to the checkpoint."""

import copy
import hashlib
import http.client
import json
import math
import random
import threading

import pytest
import torch

import charlstm
from charlstm import checkpoint, dynamic
from charlstm.api import DynamicScore
from charlstm.config import DynamicConfig
from charlstm.errors import CharlstmError
from charlstm.serve import Server
from charlstm.serve_config import ServeConfig
from tests.helpers import invoke

LETTERS = "abcdefghij"
FAST = [DynamicConfig(lr=3e-3, segment=20), DynamicConfig(method="sgd", lr=1.0, segment=20)]
"""rms and sgd at rates far above the defaults: the tests' tiny model learns within a few segments."""
LEAKY = DynamicConfig(method="sgd", lr=3.0, segment=10)
"""Faster still: with the leak dynamic.dynamic_reading avoids, it would beat the entropy of random text."""
STEP_SIZES = [DynamicConfig(), *FAST, LEAKY]


def random_text(length, seed):
    rng = random.Random(seed)
    return "".join(rng.choice(LETTERS) for _ in range(length))


def second_half(reading):
    """Mean nats per character over the second half of a reading's segments."""
    half = len(reading.nats) // 2
    return sum(reading.nats[half:]) / sum(reading.characters[half:])


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(trained_run):
    return charlstm.load(trained_run)


def read(model, text, config):
    rms = dynamic.rms_of(model.model, model.checkpoint, model.path, config)
    return dynamic.compare(model.model, model.vocabulary.encode(text), config, rms)


@pytest.mark.parametrize("config", STEP_SIZES, ids=["default", "rms-fast", "sgd-fast", "sgd-fastest"])
def test_fresh_random_characters_score_no_better_than_their_entropy(model, config):
    """Ten letters drawn uniformly at random: no reader that has not seen a character can do
    better than log(10) nats on it, on average. A reading that let a segment's own update
    predict it would go below; the adapting reader must not, however fast it learns."""
    reading = read(model, random_text(4000, seed=1), config).dynamic
    assert second_half(reading) >= math.log(10) - 0.03


@pytest.mark.parametrize("config", FAST, ids=["rms-fast", "sgd-fast"])
def test_a_text_whose_second_half_repeats_its_first_gains_clearly(model, config):
    """The same ten letters, but a 20-character phrase repeated: the adapting reader learns it
    and predicts the second half far better than chance, and than fresh random letters."""
    repeated = read(model, random_text(20, seed=2) * 100, config)
    fresh = read(model, random_text(2000, seed=1), config)
    assert repeated.gain > 0.2
    assert second_half(repeated.dynamic) < math.log(10) - 0.3
    assert second_half(repeated.dynamic) < second_half(fresh.dynamic) - 0.3


def test_a_leaky_reading_would_be_caught(model):
    """The entropy test has teeth: scoring each segment after the update that has seen it (the
    leak dynamic.dynamic_reading avoids) beats the entropy of fresh random letters, at a rate
    where the honest order does not (test above)."""
    adapting = copy.deepcopy(model.model)
    adapter = dynamic.Adapter(adapting, LEAKY, None)
    ids = model.vocabulary.encode(random_text(2000, seed=1)).long().view(1, -1)
    nats, characters, state = 0.0, 0, None
    for start in range(0, ids.shape[1] - 1, LEAKY.segment):
        inputs, targets = ids[:, start : start + LEAKY.segment], ids[:, start + 1 : start + LEAKY.segment + 1]
        inputs = inputs[:, : targets.shape[1]]
        logits, _ = adapting(inputs, state)
        loss = torch.nn.functional.cross_entropy(logits[0], targets[0])
        adapter.update(torch.autograd.grad(loss, adapter.params))
        with torch.no_grad():
            logits, state = adapting(inputs, state)
            if start >= ids.shape[1] // 2:
                nats += torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="sum").item()
                characters += targets.shape[1]
    assert nats / characters < math.log(10) - 0.1


def reference_update(params, origin, rms, config, grads):
    """The update as docs/adapt.md writes it, weight by weight: what Adapter.update's
    torch._foreach_* operations must give, float for float.
    W += decay * (r / mean r) * (W0 - W) - lr * g / (r + 0.1 * mean r), the pull at most 1."""
    mean = torch.stack([r.mean() for r in rms]).mean()
    with torch.no_grad():
        for p, w0, r, g in zip(params, origin, rms, grads, strict=True):
            if config.method == "sgd":
                p.sub_(g, alpha=config.lr)
            else:
                pull = (config.decay * r / mean).clamp(max=1.0)
                scale = 1 / (r + dynamic.EPSILON * mean)
                p.add_(pull * (w0 - p) - config.lr * scale * g)


@pytest.mark.parametrize(
    "config",
    [DynamicConfig(), DynamicConfig(lr=3e-3, decay=0.9), DynamicConfig(method="sgd", lr=0.3)],
    ids=["rms", "rms-pull-clamped", "sgd"],
)
def test_the_foreach_update_is_the_formula(model, config):
    """Adapter.update (one torch._foreach_* call per operation, the constants computed once) gives
    exactly the weights the formula written out weight by weight gives, over 20 updates that take
    the weights away from W0 and pull them back; also with a decay so large that the pull is
    clamped at 1 (W back at W0) for every weight whose r is above 1.1 times the mean. Exactly, not
    nearly: a reading's figure must not move with how the update is computed."""
    rms = dynamic.gradient_rms(model.model, model.checkpoint, model.path)
    fused, reference = copy.deepcopy(model.model), copy.deepcopy(model.model)
    adapter = dynamic.Adapter(fused, config, rms)
    origin = [p.detach().clone() for p in reference.parameters()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        grads = [torch.randn(r.shape, generator=generator) * (r + 1e-3) for r in rms]
        adapter.update(grads)
        reference_update(list(reference.parameters()), origin, rms, config, grads)
    moved = 0.0
    for (name, p), q, w0 in zip(fused.named_parameters(), reference.parameters(), origin, strict=True):
        assert torch.equal(p, q), name
        moved = max(moved, (p - w0).abs().max().item())
    assert moved > 1e-4  # the updates did move the weights: the comparison is not of two copies of W0


def test_results_repeat_exactly_and_the_model_is_left_as_it_was(model, english):
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    first = read(model, english[:3000], DynamicConfig())
    second = read(model, english[:3000], DynamicConfig())
    assert first.dynamic.nats == second.dynamic.nats and first.static.nats == second.static.nats
    for name, value in model.model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_static_figure_is_the_same_reading_without_updates(model, english):
    """With every update a no-op (sgd at a rate too small to move a float32 weight), the dynamic
    reading is the static one: the difference between the two figures is adaptation alone."""
    result = read(model, english[:2000], DynamicConfig(method="sgd", lr=1e-30))
    assert result.dynamic.loss == pytest.approx(result.static.loss, rel=1e-5)
    assert sum(result.dynamic.characters) == sum(result.static.characters) == 1999


def test_the_api_scores_dynamically_on_a_copy(model, english):
    text = english[:3000]
    static = model.score(text)
    adapted = model.score(text, dynamic=True)
    assert isinstance(adapted, DynamicScore) and adapted.characters == len(text) - 1
    assert adapted.static.nats - adapted.nats == pytest.approx(read(model, text, DynamicConfig()).gain)
    assert model.score(text) == static, "the loaded model is unchanged"
    with pytest.raises(CharlstmError, match="at least 2 characters"):
        model.score("a", dynamic=True)


def test_the_rms_update_needs_a_run_checkpoint(tmp_path, trained_run):
    """A weights-only file has no gradient statistics: one line that says what works instead."""
    saved = checkpoint.load(trained_run / "best.pt")
    bare = checkpoint.Checkpoint(saved.model_config, saved.vocabulary, saved.weights)
    checkpoint.save_atomic(bare.to_payload(), tmp_path / "bare.pt")
    model = charlstm.load(tmp_path / "bare.pt")
    with pytest.raises(CharlstmError, match="holds weights only.*sgd"):
        model.score("some text here", dynamic=True)
    assert model.score("some text here", dynamic=True, config=DynamicConfig(method="sgd")).characters == 13


def test_eval_dynamic_prints_both_figures_and_never_writes_the_checkpoint(trained_run, tmp_path, capsys, english):
    text = tmp_path / "text.txt"
    text.write_text(english[5000:8000], encoding="utf-8")
    before = sha256(trained_run / "best.pt")
    code, out, err = invoke(capsys, "eval", str(text), "-c", str(trained_run), "--dynamic")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["nats/char", "bits/char", "seconds"]
    assert lines[1].startswith("static") and lines[2].startswith("dynamic") and "nats/char)" in lines[2]
    assert "over 2,999 characters" in lines[3] and "rms update, lr 0.0003, 100-character segments" in lines[3]
    code, out, _ = invoke(capsys, "eval", str(text), "-c", str(trained_run), "--dynamic", "--json", "--segment", "25")
    result = json.loads(out)
    assert result["static"]["loss"] - result["dynamic"]["loss"] == pytest.approx(result["gain"])
    assert result["segment"] == 25 and result["characters"] == 2999
    code, again, _ = invoke(capsys, "eval", str(text), "-c", str(trained_run), "--dynamic", "--json", "--segment", "25")
    assert json.loads(again)["dynamic"]["loss"] == result["dynamic"]["loss"]
    assert sha256(trained_run / "best.pt") == before


def test_eval_dynamic_skips_unknown_characters_when_asked(trained_run, tmp_path, capsys, english):
    text = tmp_path / "accents.txt"
    text.write_text(english[:2000] + "Ωé" * 50, encoding="utf-8")
    code, _, err = invoke(capsys, "eval", str(text), "-c", str(trained_run), "--dynamic")
    assert code == 1 and "never saw: 'é', 'Ω'" in err and err.count("\n") == 1
    code, out, err = invoke(capsys, "eval", str(text), "-c", str(trained_run), "--dynamic", "--skip-unknown", "--json")
    assert code == 0 and json.loads(out)["characters"] == 1999, err


@pytest.mark.parametrize(
    ("options", "message", "status"),
    [
        (["--dynamic", "--lr", "0"], "--lr must be a positive number, got 0.0", 2),
        (["--dynamic", "--lr", "-1e-3"], "--lr must be a positive number", 2),
        (["--dynamic", "--lr", "nan"], "--lr must be a positive number", 2),
        (["--dynamic", "--segment", "0"], "--segment must be at least 1", 2),
        (["--lr", "0.1"], "add --dynamic", 1),
        (["--dynamic", "--worst", "3"], "without --dynamic", 1),
        (["--dynamic", "--precision", "bf16"], "fp32", 1),
    ],
)
def test_bad_dynamic_options_are_one_line(trained_run, tmp_path, capsys, english, options, message, status):
    """A value an option never takes exits 2 (README's rule); options that cannot go together, 1."""
    text = tmp_path / "text.txt"
    text.write_text(english[:500], encoding="utf-8")
    code, out, err = invoke(capsys, "eval", str(text), "-c", str(trained_run), *options)
    assert code == status and message in err and err.count("\n") == 1 and not out, err


def test_eval_dynamic_of_an_empty_text_is_one_line(trained_run, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = invoke(capsys, "eval", str(empty), "-c", str(trained_run), "--dynamic")
    assert code == 1 and "is empty" in err and err.count("\n") == 1


def post(server, path, body):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        connection.request("POST", path, body=json.dumps(body).encode())
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_serve_scores_dynamically_on_a_copy_for_each_request(trained_run, english):
    server = Server(charlstm.load(trained_run), ServeConfig(port=0), None, "a test passage", None, None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        text = english[:1500]
        status, plain = post(server, "/score", {"text": text})
        assert status == 200
        answers = [post(server, "/score", {"text": text, "dynamic": True}) for _ in range(2)]
        assert answers[0] == answers[1], "the second request starts from the trained weights too"
        status, adapted = answers[0]
        assert status == 200 and adapted["characters"] == len(text) - 1
        assert adapted["static_nats_per_char"] != adapted["nats_per_char"]
        assert post(server, "/score", {"text": text}) == (200, plain)
        status, refused = post(server, "/score", {"text": text, "dynamic": "yes"})
        assert status == 400 and "dynamic must be true or false" in refused["error"]
    finally:
        server.shutdown()
        server.close()
        thread.join(30)


def test_sample_adapt_to_takes_on_the_text(trained_run, tmp_path, capsys, model):
    """Adapted to a repeated phrase, the model predicts held-out repeats of it better, and
    sample's options still work on the adapted copy."""
    phrase = "the cat sat on the mat. "
    adapted = model.adapted(phrase * 60)
    assert adapted.score(phrase * 10).nats < model.score(phrase * 10).nats - 0.2
    assert len(adapted.readings) == DynamicConfig().passes
    style = tmp_path / "style.txt"
    style.write_text(phrase * 60)
    args = ["sample", "-c", str(trained_run), "-N", "2", "--seed", "3", "-n", "40", "--stop", ".", "--json"]
    code, out, err = invoke(capsys, *args, "--adapt-to", str(style), "--adapt-passes", "2")
    assert code == 0, err
    assert err.startswith(f"adapted to {style}: 1,439 characters x 2 passes in ") and " -> " in err
    samples = [json.loads(line) for line in out.splitlines()]
    assert sorted(s["seed"] for s in samples) == [3, 4]
    code, again, _ = invoke(capsys, *args, "--adapt-to", str(style), "--adapt-passes", "2")
    assert again == out, "--seed repeats an adapted sample exactly"
    code, plain, _ = invoke(capsys, *args)
    assert plain != out


@pytest.mark.parametrize(
    ("content", "options", "message", "status"),
    [
        ("", [], "is empty", 1),
        ("Ω and more", [], "never saw: 'Ω'", 1),
        ("some text", ["--adapt-passes", "0"], "--adapt-passes must be at least 1", 2),
    ],
)
def test_bad_adaptation_input_is_one_line(trained_run, tmp_path, capsys, content, options, message, status):
    style = tmp_path / "style.txt"
    style.write_text(content, encoding="utf-8")
    code, out, err = invoke(capsys, "sample", "-c", str(trained_run), "--adapt-to", str(style), *options)
    assert code == status and message in err and err.count("\n") == 1 and not out, err


def test_adapt_passes_without_a_text_is_one_line(trained_run, capsys):
    code, _, err = invoke(capsys, "sample", "-c", str(trained_run), "--adapt-passes", "2")
    assert code == 1 and "add --adapt-to FILE" in err
