import json
import math
import os
import pty
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm.config import SamplingConfig
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, ModelConfig, Stepper
from charlstm.sample import (
    RACE_BLOCK,
    Row,
    Rules,
    Streams,
    draw_samples,
    generate,
    next_ids,
    stream,
    unescape,
    unreachable_stops,
)
from charlstm.tokenizer import Vocabulary
from tests.helpers import invoke, run_cli

LOGITS = torch.tensor([0.1, 3.0, 2.5, -1.0, 0.0])


# The one-sample generator `charlstm sample` used before samples were drawn in batches,
# kept verbatim: a lone sample must stay what it was, character for character.
def reference_next_id(logits, config, generator=None):
    if config.temperature == 0:
        return logits.argmax().view(1)
    logits = logits.float() / config.temperature
    if 0 < config.top_k < logits.numel():
        threshold = torch.topk(logits, config.top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax().view(1)


def reference_stream(model, vocabulary, prime, length, config, seed):
    stepper = Stepper(model)
    device = stepper.decoder_bias.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.seed()))
    state = stepper.initial_state()
    with torch.inference_mode():
        ids = vocabulary.encode(prime).long().to(device)
        for i in range(len(ids)):
            logits, state, _ = stepper.step(ids[i : i + 1], state)
        for _ in range(length):
            char_id = reference_next_id(logits[0], config, generator)
            yield vocabulary.chars[int(char_id)]
            logits, state, _ = stepper.step(char_id, state)


def draw(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> int:
    """One id from one row of logits through the batched draw."""
    races = torch.empty(1, logits.numel()).exponential_(generator=generator)
    return int(next_ids(logits[None], races, Rules.of([config], logits.numel(), logits.device)))


def test_temperature_zero_is_greedy():
    assert draw(LOGITS, SamplingConfig(temperature=0), torch.Generator()) == 1


def test_top_k_keeps_only_the_k_likeliest():
    generator = torch.Generator().manual_seed(0)
    assert {draw(LOGITS, SamplingConfig(1.0, top_k=2), generator) for _ in range(300)} == {1, 2}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.softmax(LOGITS, 0)
    assert probs[1] < 0.9 < probs[1] + probs[2]
    generator = torch.Generator().manual_seed(0)
    assert {draw(LOGITS, SamplingConfig(1.0, top_p=0.9), generator) for _ in range(300)} == {1, 2}
    assert {draw(LOGITS, SamplingConfig(1.0, top_p=0.01), generator) for _ in range(50)} == {1}


def test_draws_follow_the_softmax_distribution():
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(4000):
        counts[draw(LOGITS, SamplingConfig(1.0), generator)] += 1
    torch.testing.assert_close(counts / 4000, torch.softmax(LOGITS, 0), atol=0.025, rtol=0)


def test_high_temperature_reaches_unlikely_characters():
    generator = torch.Generator().manual_seed(0)
    assert {draw(LOGITS, SamplingConfig(5.0), generator) for _ in range(300)} == set(range(5))


def test_rows_with_different_settings_draw_as_each_would_alone():
    configs = [
        SamplingConfig(0.8),
        SamplingConfig(0),
        SamplingConfig(1.3, top_k=3),
        SamplingConfig(0.7, top_p=0.6),
        SamplingConfig(1.0, top_k=50, top_p=0.95),
    ]
    torch.manual_seed(3)
    logits = torch.randn(len(configs), 40) * 3
    for seed in range(30):
        alone = [
            int(reference_next_id(logits[i], c, torch.Generator().manual_seed(seed))) for i, c in enumerate(configs)
        ]
        races = torch.stack(
            [torch.empty(40).exponential_(generator=torch.Generator().manual_seed(seed)) for _ in configs]
        )
        together = next_ids(logits, races, Rules.of(configs, 40, logits.device)).tolist()
        assert together == alone


@pytest.mark.parametrize("vocab_size", [1, 7, 65, 98, 257])
def test_a_block_of_races_is_the_per_character_races_in_order(vocab_size):
    """Rows draw RACE_BLOCK characters' exponentials in one call; that must be the very numbers
    one call per character gave, or a lone sample would change."""
    one_by_one = torch.Generator().manual_seed(9)
    expected = torch.stack([torch.empty(vocab_size).exponential_(generator=one_by_one) for _ in range(RACE_BLOCK)])
    block = torch.empty(RACE_BLOCK, vocab_size).exponential_(generator=torch.Generator().manual_seed(9))
    assert torch.equal(block, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"num_samples": 0},
        {"stop": ""},
        {"stop": ("\n", "")},
        {"novel": 0},
        {"min_length": 20, "length": 10},
        {"length": -1},
        {"prime": ""},
    ],
)
def test_bad_sampling_options_are_refused(kwargs):
    with pytest.raises(CharlstmError):
        SamplingConfig(**kwargs)


def tiny_model(cell: str = "lstm", hidden: int = 16, text: str = "abcdefgh \n") -> tuple[CharLSTM, Vocabulary]:
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text(text)
    config = ModelConfig(vocab_size=len(vocabulary), cell=cell, hidden=hidden, embedding=8)
    return CharLSTM(config).eval(), vocabulary


@pytest.fixture
def model_and_vocabulary():
    return tiny_model()


@pytest.mark.parametrize("cell", ["lstm", "gru", "indylstm", "rnn"])
@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(1.0),
        SamplingConfig(0.8),
        SamplingConfig(0),
        SamplingConfig(0.9, top_k=4),
        SamplingConfig(1.2, top_p=0.8),
    ],
)
def test_a_lone_sample_is_what_the_generator_before_batching_wrote(cell, config):
    model, vocabulary = tiny_model(cell)
    for seed in (0, 1, 1234):
        expected = "".join(reference_stream(model, vocabulary, "ab", 300, config, seed))
        assert "".join(generate(model, vocabulary, "ab", 300, config, seed)) == expected


def test_sample_k_of_a_batch_is_the_lone_sample_with_seed_plus_k():
    model, vocabulary = tiny_model(hidden=64)
    config = SamplingConfig(1.0, length=200, num_samples=12, seed=40, prime="ab")
    batched = {s.index: s for s in draw_samples(model, vocabulary, config)}
    assert sorted(batched) == list(range(12))
    for k in range(12):
        assert batched[k].seed == 40 + k
        assert batched[k].text == "".join(reference_stream(model, vocabulary, "ab", 200, SamplingConfig(1.0), 40 + k))
    assert len({s.text for s in batched.values()}) == 12


def test_samples_with_a_stop_string_are_the_unstopped_sample_cut_before_it(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    config = SamplingConfig(1.0, length=300, num_samples=16, seed=0, prime="a")
    whole = {s.index: s.text for s in draw_samples(model, vocabulary, config)}
    for stop, min_length in ((" ", 0), ("\n", 0), ("ab", 0), ("a", 5), (("h", "gg"), 0)):
        cut = list(draw_samples(model, vocabulary, replace(config, stop=stop, min_length=min_length)))
        assert len(cut) == 16
        stops = (stop,) if isinstance(stop, str) else stop
        for sample in cut:
            text = whole[sample.index]
            ends = [text.find(s, min_length) for s in stops]
            ends = [(e, s) for e, s in zip(ends, stops, strict=True) if e >= 0]
            if ends:
                end, hit = min(ends, key=lambda x: (x[0] + len(x[1]), -len(x[1])))
                assert sample.stop_reason == "stop" and sample.text == text[:end] and sample.stop == hit
            else:
                assert sample.stop_reason == "length" and sample.text == text and sample.stop is None


def test_streamed_pieces_never_show_a_stop_string_and_add_up_to_the_sample(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    for seed in range(20):
        config = SamplingConfig(1.0, length=200, stop=("ab", "hhh"), seed=seed, prime="a")
        pieces = list(stream(model, vocabulary, config))
        (sample,) = draw_samples(model, vocabulary, config)
        assert "".join(pieces) == sample.text
        assert all(piece for piece in pieces)


def row_for(config: SamplingConfig) -> Row:
    vocabulary_size = 4
    return Row(config, 0, ([], torch.zeros(1, vocabulary_size)))


def test_a_row_holds_back_what_may_begin_a_stop_string():
    row = row_for(SamplingConfig(length=50, stop=("\n\n", "END")))
    shown = []
    for ch in "ab\ncd\nEN":
        row.add(ch, 1.0)
        shown.append(row.new_text())
    assert shown == ["a", "b", "", "\nc", "d", "", "\n", ""]
    row.add("D", 1.0)
    assert row.done and row.stop == "END" and row.new_text() == "" and row.text == "ab\ncd\n"


def test_min_length_draws_past_an_early_stop():
    row = row_for(SamplingConfig(length=50, stop="x", min_length=3))
    for ch in "axbx":
        row.add(ch, 1.0)
    assert row.done and row.text == "axb"


def test_a_stop_string_counts_once_min_length_characters_precede_it():
    row = row_for(SamplingConfig(length=50, stop=("ab", "b"), min_length=2))
    for ch in "xab":
        row.add(ch, 1.0)
    assert row.done and row.stop == "b" and row.text == "xa"


def test_length_caps_a_sample_that_never_stops():
    row = row_for(SamplingConfig(length=3, stop="z"))
    for ch in "abc":
        row.add(ch, 1.0)
    assert row.done and row.stop is None and row.text == "abc" and row.new_text() == "abc"


def test_rows_can_leave_and_join_between_steps_without_changing_what_they_draw(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    config = SamplingConfig(1.0, length=100, prime="ab")
    streams = Streams(model, vocabulary)
    rows = [streams.row(config, seed) for seed in range(5)]
    for row in rows[:3]:
        streams.add(row)
    for _ in range(10):
        streams.step()
    streams.take(rows[1])
    streams.add(rows[3])
    for _ in range(37):
        streams.step()
    streams.add(rows[1])
    streams.add(rows[4])
    while streams:
        streams.step()
    for seed, row in enumerate(rows):
        assert row.done and row.text == "".join(
            reference_stream(model, vocabulary, "ab", 100, SamplingConfig(1.0), seed)
        )


def test_a_finished_row_continues_from_its_state_as_one_longer_sample(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    streams = Streams(model, vocabulary)
    row = streams.row(SamplingConfig(1.0, length=60, prime="ab"), seed=7)
    streams.add(row)
    while streams:
        streams.step()
    first = row.text
    row.restart(SamplingConfig(1.0, length=90))
    streams.add(row)
    while streams:
        streams.step()
    assert first + row.text == "".join(reference_stream(model, vocabulary, "ab", 150, SamplingConfig(1.0), 7))


def test_samples_report_their_bits_per_character_under_the_model(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    (sample,) = draw_samples(model, vocabulary, SamplingConfig(0.8, length=40, seed=3, prime="ab"))
    with torch.no_grad():
        ids = vocabulary.encode("ab" + sample.text).long()[None]
        logits, _ = model(ids)
        nats = torch.nn.functional.cross_entropy(logits[0, 1:-1], ids[0, 2:])
    assert sample.bits_per_char == pytest.approx(float(nats) / math.log(2), rel=1e-4)
    assert sample.to_json()["characters"] == 40


def test_zero_length_samples_are_empty(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    samples = list(draw_samples(model, vocabulary, SamplingConfig(length=0, num_samples=3)))
    assert [s.text for s in samples] == ["", "", ""] and samples[0].bits_per_char is None


def test_stop_strings_the_model_cannot_write_are_warned_about(model_and_vocabulary):
    _, vocabulary = model_and_vocabulary
    warnings = unreachable_stops(SamplingConfig(stop=("\n", "Zé")), vocabulary)
    assert len(warnings) == 1 and str(warnings[0]).startswith("stop 'Zé' has characters the model never saw")


def test_backslash_escapes_in_stop_strings():
    assert unescape(r"\n") == "\n"
    assert unescape(r"a\tb\\n\x") == "a\tb\\n\\x"


def test_generation_is_repeatable_with_a_seed_and_has_the_asked_length(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    a = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=5))
    b = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=5))
    c = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=6))
    assert a == b != c
    assert len(a) == 200 and set(a) <= set(vocabulary.chars)


def test_unknown_prime_characters_are_named_before_anything_is_generated(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    with pytest.raises(CharlstmError, match="'Z'"):
        generate(model, vocabulary, "abZ", 10, SamplingConfig())
    with pytest.raises(CharlstmError, match="length"):
        generate(model, vocabulary, "ab", -1, SamplingConfig())


@settings(max_examples=60, deadline=None)
@given(prime=st.text(max_size=12), length=st.integers(-3, 12))
def test_any_prime_either_samples_or_is_refused_clearly(prime, length):
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("abcdefgh \n")
    model = CharLSTM(ModelConfig(vocab_size=len(vocabulary), hidden=8, embedding=4)).eval()
    unknown = set(prime) - set(vocabulary.chars)
    if not prime or unknown or length < 0:
        with pytest.raises(CharlstmError):
            generate(model, vocabulary, prime, length, SamplingConfig(), seed=0)
    else:
        text = "".join(generate(model, vocabulary, prime, length, SamplingConfig(), seed=0))
        assert len(text) == length and set(text) <= set(vocabulary.chars)


# The command line: `charlstm sample` on a run trained for a few steps (conftest's trained_run).

JSON_KEYS = {"sample", "text", "prime", "characters", "stop_reason", "stop", "bits_per_char", "seed", "novel"}
JSON_KEYS |= {"redraws"}


def sample_json(capsys, run, *args: str) -> tuple[list[dict], str]:
    code, out, err = invoke(capsys, "sample", "-c", str(run), "--json", *args)
    assert code == 0, err
    return sorted((json.loads(line) for line in out.splitlines()), key=lambda s: s["sample"]), err


def test_many_samples_as_json_lines(capsys, trained_run):
    samples, _ = sample_json(capsys, trained_run, "-N", "6", "--seed", "7", "-n", "40", "--stop", "\\n", "-p", "\\n")
    assert [s["sample"] for s in samples] == list(range(6)) and [s["seed"] for s in samples] == list(range(7, 13))
    for s in samples:
        assert set(s) == JSON_KEYS and s["prime"] == "\n" and "\n" not in s["text"]
        assert s["characters"] == len(s["text"]) and s["bits_per_char"] > 0
        assert s["novel"] is None and s["redraws"] == 0
        if s["stop_reason"] == "stop":
            assert s["stop"] == "\n" and s["characters"] < 40
        else:
            assert s["stop_reason"] == "length" and s["stop"] is None and s["characters"] == 40
    again, _ = sample_json(capsys, trained_run, "-N", "6", "--seed", "7", "-n", "40", "--stop", "\\n", "-p", "\\n")
    assert again == samples


def test_piped_samples_are_printed_whole_under_a_numbered_line(capsys, trained_run):
    code, out, _ = invoke(capsys, "sample", "-c", str(trained_run), "-N", "3", "-n", "30", "-p", "The", "--seed", "1")
    assert code == 0
    first, *parts = re.split(r"--- sample (\d) \(0 to 2\), seed (\d+) ---\n", out)
    blocks = list(zip(parts[0::3], parts[1::3], parts[2::3], strict=True))
    assert first == "" and [b[:2] for b in blocks] == [("0", "1"), ("1", "2"), ("2", "3")]
    samples, _ = sample_json(capsys, trained_run, "-N", "3", "-n", "30", "-p", "The", "--seed", "1")
    assert [block for _, _, block in blocks] == ["The" + s["text"] + "\n" for s in samples]


def test_samples_that_end_out_of_order_are_printed_in_order_counted_as_json_counts(capsys, trained_run):
    """Samples cut by a stop string end in any order; they used to be printed as they ended
    (1, 4, 3, 2), under 1-based headers while JSON counted from 0."""
    args = ("-N", "6", "--seed", "7", "-n", "40", "--stop", "\\n", "-p", "\\n")
    code, out, _ = invoke(capsys, "sample", "-c", str(trained_run), "--json", *args)
    samples = [json.loads(line) for line in out.splitlines()]
    lengths = [s["characters"] for s in samples]
    assert lengths != sorted(lengths), "the samples must end out of order for this test to mean anything"
    assert code == 0 and [s["sample"] for s in samples] == list(range(6))
    code, out, _ = invoke(capsys, "sample", "-c", str(trained_run), *args)
    assert code == 0
    assert re.findall(r"--- sample (\d) \(0 to 5\), seed (\d+) ---", out) == [(str(k), str(7 + k)) for k in range(6)]


def test_many_samples_on_a_terminal(trained_run, tmp_path):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "sample", "-c", str(trained_run), "-N", "3", "-n", "20", "-p", "ROMEO:"],
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"},
    )
    os.close(terminal)
    shown = bytearray()
    while chunk := _read(controller):
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())
    assert all(f"sample {k} (0 to 2)" in text for k in (0, 1, 2)) and text.count("ROMEO:") == 3


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal closed with the process
        return b""


@pytest.mark.parametrize(
    "args, message",
    [
        (["-N", "0"], "--num-samples must be at least 1, got 0"),
        (["--stop", ""], "--stop needs text"),
        (["--novel", "0"], "--novel is the length of a copied stretch and must be at least 1"),
        (["--min-length", "50", "-n", "10"], "--min-length 50 is above --length 10"),
    ],
)
def test_bad_sample_options_are_one_line(capsys, trained_run, args, message):
    code, out, err = invoke(capsys, "sample", "-c", str(trained_run), *args)
    assert code == 2 and out == "" and err == f"charlstm: error: {err.split('error: ', 1)[1]}"
    assert message in err and err.count("\n") == 1


def test_a_stop_string_the_model_never_saw_is_a_warning_and_the_sample_goes_on(capsys, trained_run):
    code, out, err = invoke(capsys, "sample", "-c", str(trained_run), "--stop", "Ω", "-n", "10", "-p", "a")
    assert code == 0 and len(out) == len("a") + 10 + 1
    warning = "--stop 'Ω' has characters the model never saw ('Ω'), so it can never end a sample"
    assert err == f"charlstm: warning: {warning}\n"
    many = run_cli("sample", "-c", str(trained_run), "--stop", "Ω", "-n", "10", "-N", "2", "--json")
    assert many.returncode == 0 and len(many.stdout.splitlines()) == 2
    assert many.stderr == f"charlstm: warning: {warning}\n"  # once, and no Python warning beside it


def test_novel_redraws_copies_of_the_training_corpus(capsys, trained_run):
    """Every character of a sample is in the corpus, so with --novel 1 every sample is a copy
    for certain; no 300-character stretch can be, in 50 characters."""
    samples, err = sample_json(capsys, trained_run, "--novel", "1", "-N", "2", "-n", "5", "--seed", "0")
    assert [(s["novel"], s["redraws"]) for s in samples] == [(False, 10), (False, 10)]
    assert "--novel 1: 2 of 2 samples redrawn (20 redraws in all); 2 still repeat the corpus after 10 redraws" in err
    samples, err = sample_json(capsys, trained_run, "--novel", "300", "-N", "2", "-n", "50", "--seed", "0")
    assert [(s["novel"], s["redraws"]) for s in samples] == [(True, 0), (True, 0)]
    assert "none repeats 300 characters of the training corpus" in err


def test_novel_on_a_run_whose_corpus_is_gone_is_one_line(capsys, trained_run, tmp_path):
    payload = torch.load(trained_run / "best.pt", weights_only=True)
    payload["train_config"]["corpus"] = str(tmp_path / "moved-away.txt")
    torch.save(payload, tmp_path / "best.pt")
    code, out, err = invoke(capsys, "sample", "-c", str(tmp_path / "best.pt"), "--novel", "12")
    assert code == 1 and out == ""
    assert err.startswith("charlstm: error: --novel needs the run's training corpus to compare with: corpus ")
    assert "moved-away.txt does not exist" in err and err.count("\n") == 1
