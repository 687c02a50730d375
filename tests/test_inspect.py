"""inspect-gates replays the exact weights, and its statistics mean what they say."""

import json
import sys
from html.parser import HTMLParser

import pytest
import torch

from charlstm import inspect
from charlstm.errors import CharlstmError
from charlstm.model import CELL_TYPES, CharLSTM, ModelConfig
from charlstm.tokenizer import Vocabulary
from tests.helpers import invoke


def trained_model(cell: str, vocabulary: Vocabulary, text: str) -> CharLSTM:
    """A model trained a few steps with dropout on, so its weights are not the initial ones."""
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(len(vocabulary), cell=cell, layers=3, hidden=24, embedding=8, dropout=0.3))
    ids = vocabulary.encode(text).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for start in range(0, 200, 40):
        x, y = ids[start : start + 40][None], ids[start + 1 : start + 41][None]
        logits, _ = model.train()(x)
        loss = torch.nn.functional.cross_entropy(logits[0], y[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_replayed_states_equal_the_fused_kernel_at_every_step_and_layer(cell, english):
    text = english[:1500]
    vocabulary = Vocabulary.from_text(text)
    model = trained_model(cell, vocabulary, text)
    inspection = inspect.inspect_text(model, vocabulary, text, keep=None)
    ids = vocabulary.encode(text).long()
    state = None
    names = ("hidden", "cell")[: model.state_size]
    with torch.no_grad():
        for t in range(len(text)):
            _, state = model(ids[t : t + 1][None], state)
            for i, name in enumerate(names):
                replayed = inspection.values[t, :, inspection.quantity_index(name)]
                torch.testing.assert_close(replayed, state[i][:, 0], atol=2e-5, rtol=1e-4)


def test_gates_are_the_explicit_cells_own_activations():
    vocabulary = Vocabulary.from_text("ab")
    model = trained_model("lstm", vocabulary, "ab" * 200)
    inspection = inspect.inspect_text(model, vocabulary, "abba", keep=None)
    assert inspection.quantities == ("input", "forget", "candidate", "output", "hidden", "cell")
    gates = inspection.values[:, :, :4]
    assert (gates[:, :, [0, 1, 3]] >= 0).all() and (gates[:, :, [0, 1, 3]] <= 1).all()
    h, o, c = (inspection.values[:, :, inspection.quantity_index(n)] for n in ("hidden", "output", "cell"))
    torch.testing.assert_close(h, o * torch.tanh(c))


def test_saturation_counts_fractions_of_time():
    statistics = inspect.Statistics(("forget",), layers=1, units=2, sigmoid_gates=("forget",))
    values = torch.tensor([[0.05, 0.5], [0.95, 0.5], [0.95, 0.99], [0.5, 0.99]]).view(4, 1, 1, 2)
    statistics.add(values, torch.zeros(4, len(inspect.FEATURES), dtype=torch.float64))
    low, high = statistics.saturation()[(0, "forget")]
    assert low.tolist() == [0.25, 0.0]
    assert high.tolist() == [0.5, 0.5]


def test_unit_finder_finds_a_unit_that_copies_a_feature():
    text = 'say "hello (world)" now\n  and "then"\n' * 20
    features = inspect.text_features(text)
    quotes = features[:, inspect.FEATURES.index("inside_quotes")]
    values = torch.randn(len(text), 1, 2, 4)
    values[:, 0, 1, 2] = quotes.float() * 2 - 1 + 0.01 * torch.randn(len(text))
    statistics = inspect.Statistics(("hidden", "cell"), layers=1, units=4, sigmoid_gates=())
    statistics.add(values[:500], features[:500])
    statistics.add(values[500:], features[500:])
    inspection = inspect.Inspection(text, "lstm", ("hidden", "cell"), values, statistics)
    best = {f.feature: f for f in inspection.best_per_feature()}
    assert (best["inside_quotes"].quantity, best["inside_quotes"].unit) == ("cell", 2)
    assert best["inside_quotes"].r > 0.99
    assert "is_uppercase" not in best, "a feature constant over the text has no correlation to report"
    r = statistics.correlations()
    torch.testing.assert_close(
        r[inspect.FEATURES.index("inside_quotes"), 0, 1, 2].float(),
        torch.corrcoef(torch.stack([quotes.float(), values[:, 0, 1, 2]]))[0, 1],
        atol=1e-5,
        rtol=1e-5,
    )


def test_text_features():
    features = inspect.text_features('a("b")\n  x')
    column = {name: features[:, i].tolist() for i, name in enumerate(inspect.FEATURES)}
    assert column["inside_quotes"] == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert column["bracket_depth"] == [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert column["position_in_line"] == [1, 2, 3, 4, 5, 6, 0, 1, 2, 3]
    assert column["indentation"] == [0, 0, 0, 0, 0, 0, 0, 1, 2, 2]
    assert column["after_newline"] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]


def test_only_a_bounded_window_of_raw_values_is_kept():
    vocabulary = Vocabulary.from_text("abc")
    model = CharLSTM(ModelConfig(3, hidden=8, embedding=4)).eval()
    inspection = inspect.inspect_text(model, vocabulary, "abc" * 3000, keep=100)
    assert inspection.values.shape == (100, 2, 6, 8)
    assert inspection.statistics.steps == 9000


def test_unknown_characters_are_named():
    vocabulary = Vocabulary.from_text("abc")
    model = CharLSTM(ModelConfig(3, hidden=8, embedding=4)).eval()
    with pytest.raises(CharlstmError, match="never saw: 'z'"):
        inspect.inspect_text(model, vocabulary, "abz")


VOID_TAGS = {"meta", "br", "img", "input", "link", "hr"}


class _Checker(HTMLParser):
    """Checks that every element is closed in order: a well-formed page."""

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.classes = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.classes.append(dict(attrs).get("class"))
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


TEXT = "ROMEO:\nWhat light is this, Juliet?"


def test_cli_views_html_report_and_exports(capsys, tmp_path, trained_run):
    report, trace, arrays = tmp_path / "r.html", tmp_path / "t.json", tmp_path / "t.npz"
    code, out, err = invoke(
        capsys,
        "inspect-gates",
        "--checkpoint",
        str(trained_run),
        "--text",
        TEXT,
        "--unit",
        "1",
        "--unit",
        "5",
        "--layer",
        "1",
        "--gate",
        "forget",
        "--html",
        str(report),
        "--json",
        str(trace),
        "--npz",
        str(arrays),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "pos\tchar\tL1.forget.1\tL1.forget.5"
    assert lines[1].startswith("0\tR\t") and lines[7].startswith("6\t\\n\t")
    assert "Gate saturation" in err and "Unit finder" in err
    page = report.read_text()
    checker = _Checker()
    checker.feed(page)
    assert checker.stack == []
    # two units' heat-maps (a span per character), and the surprise view: a span per character holding its guesses
    assert checker.classes.count("s") == checker.classes.count("guesses") == len(TEXT)
    assert checker.tags.count("span") - 2 * len(TEXT) == 2 * len(TEXT) + 5 and "circle" in checker.tags
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")
    exported = json.loads(trace.read_text())
    assert len(exported["values"]) == len(TEXT) and exported["quantities"][1] == "forget"
    import numpy as np

    with np.load(arrays) as z:
        assert z["values"].shape == (len(TEXT), 2, 6, 32)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--text", "ROMEO Ω"], "never saw: 'Ω'"),
        (["--gate", "reset"], "has no 'reset'"),
        (["--layer", "5"], "layer must be in 0..1, got 5"),
        (["--unit", "999"], "unit must be in 0..31, got 999"),
        (["--view", "bits"], "there is no view 'bits'; choose gates or surprise"),
        (["--text", "a", "--file", "b"], "not both"),
    ],
)
def test_cli_bad_inspect_options(capsys, trained_run, args, expected):
    code, _, err = invoke(capsys, "inspect-gates", "--checkpoint", str(trained_run), *args)
    assert code == 1 and err.count("\n") == 1 and expected in err


def test_npz_without_numpy_is_one_clear_error(capsys, tmp_path, trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)
    code, _, err = invoke(
        capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", "ROMEO", "--npz", str(tmp_path / "t.npz")
    )
    assert (
        code == 1
        and err.strip().splitlines()[-1]
        == "charlstm: error: --npz needs numpy (pip install numpy); --json works without it"
    )
    assert not (tmp_path / "t.npz").exists()


def test_skip_unknown_drops_unseen_characters(capsys, trained_run):
    code, out, _ = invoke(
        capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", "ROMΩEO", "--skip-unknown"
    )
    assert code == 0 and len(out.splitlines()) == 1 + 5


def test_default_passage_is_a_validation_excerpt_of_the_runs_corpus(capsys, trained_run, small_corpus):
    code, out, _ = invoke(capsys, "inspect-gates", "--checkpoint", str(trained_run), "--length", "300")
    assert code == 0
    header = out.splitlines()[0].split("\t")
    assert len(header) == 2 + 3 and len({column.split(".")[0] for column in header[2:]}) == 1
    chars = "".join(json.loads(f'"{line.split(chr(9))[1]}"') for line in out.splitlines()[1:])
    text = small_corpus.read_text()
    assert chars == text[len(text) - int(len(text) * 0.1) :][:300]
