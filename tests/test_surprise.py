"""What the model expected: every character's probability, surprise in bits and top guesses,
the surprise view of inspect-gates (terminal, pipe, HTML page in a real browser), and
`charlstm eval --worst`."""

import itertools
import json
import math

import pytest
import torch

from charlstm import inspect, inspect_render, surprise
from charlstm.errors import CharlstmError
from charlstm.evaluation import evaluate_tokens
from charlstm.model import CharLSTM, ModelConfig
from charlstm.tokenizer import Vocabulary
from tests.helpers import invoke


def model_for(text: str, cell: str = "lstm") -> tuple[CharLSTM, Vocabulary]:
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text(text)
    return CharLSTM(ModelConfig(len(vocabulary), cell=cell, layers=2, hidden=16, embedding=8)).eval(), vocabulary


def fused_bits_and_guesses(model: CharLSTM, vocabulary: Vocabulary, text: str):
    """The reference: one pass of the fused model over the whole text."""
    ids = vocabulary.encode(text).long()
    with torch.no_grad():
        logits, _ = model(ids[None])
    log_probs = torch.log_softmax(logits[0, :-1], dim=1)
    bits = -log_probs.gather(1, ids[1:, None]).squeeze(1) / math.log(2)
    probabilities, guesses = log_probs.exp().topk(inspect.TOP_GUESSES, dim=1)
    return bits, probabilities, guesses


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_expectations_are_the_models_own_predictions_across_chunks(cell, english):
    text = english[: inspect.CHUNK + 80]  # the replay hands over from one chunk to the next
    model, vocabulary = model_for(text, cell)
    expected = inspect.expectations(model, vocabulary, text)
    bits, probabilities, guesses = fused_bits_and_guesses(model, vocabulary, text)
    assert math.isnan(expected.bits[0]) and expected.guesses(0) == []
    torch.testing.assert_close(expected.bits[1:], bits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(expected.probability[1:], 2**-bits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(expected.guess_probabilities[1:], probabilities, atol=1e-5, rtol=1e-4)
    assert (expected.guess_ids[1:] == guesses).float().mean() > 0.99  # ties may order differently
    assert expected.guesses(5)[0] == (vocabulary.chars[guesses[4, 0]], pytest.approx(float(probabilities[4, 0])))
    assert expected.scored == len(text) - 1
    assert expected.bits_per_char == pytest.approx(float(bits.double().mean()), rel=1e-5)


def test_a_kept_window_is_bounded_but_bits_per_char_covers_the_whole_text(english):
    text = english[:1500]
    model, vocabulary = model_for(text)
    inspection = inspect.inspect_text(model, vocabulary, text, keep=40)
    whole = inspect.expectations(model, vocabulary, text)
    assert inspection.expected.text == text[:40] and inspection.expected.bits.shape == (40,)
    assert inspection.expected.guess_ids.shape == (40, inspect.TOP_GUESSES)
    torch.testing.assert_close(inspection.expected.bits, whole.bits[:40], equal_nan=True)
    assert inspection.expected.bits_per_char == pytest.approx(whole.bits_per_char)


def test_a_small_vocabulary_has_fewer_guesses():
    model, vocabulary = model_for("abab")
    expected = inspect.expectations(model, vocabulary, "abba")
    assert [len(expected.guesses(t)) for t in range(4)] == [0, 2, 2, 2]
    assert all(sum(p for _, p in expected.guesses(t)) == pytest.approx(1.0) for t in (1, 2, 3))


def test_character_bits_score_each_character_as_eval_does(english):
    text = english[:400]  # one stream: every character after the first is scored from all before it
    model, vocabulary = model_for(text)
    ids = vocabulary.encode(text)
    bits = surprise.character_bits(model, ids, device="cpu")
    assert math.isnan(bits[0])
    torch.testing.assert_close(bits[1:], fused_bits_and_guesses(model, vocabulary, text)[0], atol=1e-5, rtol=1e-5)
    longer = vocabulary.encode(vocabulary.known(english[:20_000]))
    many = surprise.character_bits(model, longer, device="cpu")
    scored = many[~many.isnan()]
    figures = evaluate_tokens(model, longer, "cpu", "fp32")
    assert len(scored) == figures["characters"]
    assert float(scored.double().mean()) == pytest.approx(figures["bpc"], rel=1e-6)


def test_worst_passages_are_the_most_surprising_windows_and_never_overlap():
    vocabulary = Vocabulary("abcdefghij")
    tokens = torch.arange(100) % 10
    bits = torch.ones(100)
    bits[0] = math.nan
    bits[40:48] = 9.0  # a corrupted stretch
    bits[80:84] = 5.0  # a milder one
    passages = surprise.worst_passages(bits, tokens, vocabulary, k=3, width=10)
    first, second = passages[0].start, passages[1].start
    assert first <= 40 and first + 10 >= 48 and second <= 80 and second + 10 >= 84, "each holds its whole stretch"
    assert passages[0].bits_per_char == pytest.approx((8 * 9 + 2) / 10)
    assert passages[0].text == vocabulary.decode(tokens[passages[0].start : passages[0].start + 10])
    every = surprise.worst_passages(bits, tokens, vocabulary, k=50, width=10)  # as many as fit
    assert 3 < len(every) <= 10 and every[:3] == passages
    spans = sorted((p.start, p.start + 10) for p in every)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert [p.bits_per_char for p in every] == sorted((p.bits_per_char for p in every), reverse=True)
    short = surprise.worst_passages(bits[:5], tokens[:5], vocabulary, k=2, width=64)
    assert [(p.start, p.text) for p in short] == [(0, "abcde")]
    with pytest.raises(CharlstmError, match="at least 1"):
        surprise.worst_passages(bits, tokens, vocabulary, k=0)


TEXT = "ROMEO:\nWhat light is this, Juliet?"


def test_cli_surprise_view_on_a_pipe_is_tab_separated(capsys, trained_run):
    code, out, err = invoke(
        capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", TEXT, "--view", "surprise"
    )
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0][:4] == ["pos", "char", "p", "bits"] and len(rows[0]) == 4 + 2 * inspect.TOP_GUESSES
    assert rows[1][:2] == ["0", "R"] and set(rows[1][2:]) == {""}
    assert len(rows) == 1 + len(TEXT) and rows[7][1] == "\\n"
    for row in rows[2:]:
        assert float(row[2]) == pytest.approx(2 ** -float(row[3]), abs=1e-4)
        guessed = [float(p) for p in row[5::2]]
        assert guessed == sorted(guessed, reverse=True) and sum(guessed) <= 1.0001
    assert "most surprising" in err and "Unit finder" not in err


def test_the_report_shows_coloured_characters_and_their_guesses_on_hover(browser_page, tmp_path, capsys, trained_run):
    report = tmp_path / "report.html"
    code, _, err = invoke(
        capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", TEXT, "--html", str(report)
    )
    assert code == 0, err
    page = browser_page.open(report)
    characters = page.locator("pre.surprise span.s")
    assert characters.count() == len(TEXT)
    backgrounds = {characters.nth(t).evaluate("e => getComputedStyle(e).backgroundColor") for t in range(len(TEXT))}
    assert len(backgrounds) > 3, "characters are coloured by their surprise"
    guesses = page.locator("pre.surprise span.s span.guesses")
    assert not guesses.nth(8).is_visible()
    characters.nth(8).hover()  # the 'h' of "What"
    assert guesses.nth(8).is_visible()
    box = guesses.nth(8).inner_text()
    assert box.startswith("#8 h:") and "bits" in box and box.count("%") == inspect.TOP_GUESSES
    assert not guesses.nth(3).is_visible()
    characters.nth(0).hover()
    assert "not predicted" in guesses.nth(0).inner_text()
    browser_page.assert_no_errors()


def test_surprise_colours_run_from_white_to_red():
    assert inspect_render.surprise_colour(0.0) == (255, 255, 255)
    reds = [inspect_render.surprise_colour(b)[1] for b in (0.0, 2.0, 4.0, 6.0, 8.0, 20.0)]
    assert reds == sorted(reds, reverse=True) and reds[-1] == reds[-2]
    assert inspect_render.surprise_colour(math.nan) != inspect_render.surprise_colour(0.0)


def test_json_export_carries_bits_and_guesses(capsys, tmp_path, trained_run):
    trace = tmp_path / "t.json"
    code, _, err = invoke(
        capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", TEXT, "--json", str(trace)
    )
    assert code == 0, err
    exported = json.loads(trace.read_text())
    assert exported["bits"][0] is None and len(exported["bits"]) == len(TEXT)
    assert len(exported["guesses"][1]) == inspect.TOP_GUESSES and exported["guesses"][0] == []


def test_eval_worst_finds_the_corrupted_line(capsys, tmp_path, trained_run, english):
    garbage = "zqxj" * 16
    text = tmp_path / "text.txt"
    text.write_text(english[:3000] + "\n" + garbage + "\n" + english[3000:6000], encoding="utf-8")
    code, out, err = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run), "--worst", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and "bits/char over" in lines[0]
    assert "zqxjzqxjzqxj" in lines[1] and lines[1].split()[1:3] == ["bits/char", "at"]
    worst_bits, next_bits = (float(line.split()[0]) for line in lines[1:])
    assert worst_bits > next_bits
    code, out, _ = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run), "--worst", "2", "--json")
    found = json.loads(out)
    code, out, _ = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run), "--json")
    plain = json.loads(out)
    assert found["characters"] == plain["characters"] and found["bpc"] == pytest.approx(plain["bpc"], rel=1e-6)
    assert [len(p["text"]) for p in found["worst"]] == [surprise.PASSAGE] * 2
    assert found["worst"][0]["start"] <= 3001 and found["worst"][0]["start"] + surprise.PASSAGE >= 3001 + len(garbage)


def test_eval_worst_zero_is_one_clear_line(capsys, tmp_path, trained_run):
    text = tmp_path / "text.txt"
    text.write_text("some text to score\n" * 10, encoding="utf-8")
    code, out, err = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run), "--worst", "0")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "worst must be at least 1: it is how many passages to list, got 0" in err
