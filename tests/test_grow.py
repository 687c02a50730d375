"""Fine-tuning on text with characters the checkpoint never saw: the vocabulary grows, every
old character keeps its id and its trained rows, and the grown run is a run like any other."""

import hashlib
import importlib.util
import json
import re

import pytest
import torch

import charlstm
from charlstm import checkpoint, export_onnx
from charlstm.config import TrainConfig
from charlstm.export_html import html_page
from charlstm.model import VOCABULARY_ROWS, CharLSTM, Stepper
from charlstm.runs import resume, start
from charlstm.tokenizer import Vocabulary
from charlstm.trainer import TrainingInterrupted
from tests.helpers import InterruptAt, invoke, run_cli

MODEL = {"layers": 2, "hidden": 32, "embedding": 16}
NEW_TEXT = "Café naïve — “quoted” 日本語\n"


def config(corpus, **overrides):
    base = {"corpus": str(corpus), "batch_size": 8, "seq_len": 32, "max_steps": 10, "max_time": 0,
            "eval_every": 5, "sample_every": 0, "warmup_steps": 2, "device": "cpu", "precision": "fp32"}  # fmt: skip
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="module")
def source(tmp_path_factory, small_corpus):
    """A tiny run on the English corpus, whose vocabulary lacks NEW_TEXT's accents and CJK."""
    trainer = start(MODEL, config(small_corpus), tmp_path_factory.mktemp("source"))
    trainer.run()
    return trainer.run_dir / "last.pt"


@pytest.fixture(scope="module")
def new_corpus(tmp_path_factory, english):
    path = tmp_path_factory.mktemp("new") / "new.txt"
    path.write_text(english[:20_000] + NEW_TEXT * 40, encoding="utf-8")
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extended_keeps_every_old_id_and_appends_the_new_characters_sorted():
    old = Vocabulary("\n abc")
    grown = old.extended("cabé日a—")
    assert grown.chars == "\n abcé—日", "old ids first, then the new characters by code point"
    assert [grown.encode(ch).item() for ch in old.chars] == list(range(len(old)))
    assert old.extended("abc") == old


def test_growth_keeps_the_old_rows_and_gives_the_new_characters_fresh_ones(tmp_path, source, new_corpus):
    before = sha256(source)
    saved = checkpoint.load(source)
    old = saved.vocabulary
    tuned = start({}, config(new_corpus), tmp_path, init_from=str(source))
    grown = tuned.data.vocabulary
    assert grown.chars.startswith(old.chars)
    assert set(tuned.data.added) == set(NEW_TEXT) - set(old.chars) and tuned.data.grown_from == len(old)
    torch.manual_seed(tuned.config.seed)
    fresh = CharLSTM(tuned.model.config).state_dict()  # what the trainer built before loading
    weights = tuned.model.state_dict()
    for name, value in saved.weights.items():
        if name in VOCABULARY_ROWS:
            assert torch.equal(weights[name][: len(old)], value), f"{name}: old rows kept exactly"
            assert torch.equal(weights[name][len(old) :], fresh[name][len(old) :]), f"{name}: new rows as initialised"
        else:
            assert torch.equal(weights[name], value), name
    tuned.run()
    assert checkpoint.load(tuned.run_dir / "last.pt").vocabulary == grown
    assert json.loads((tuned.run_dir / "config.json").read_text())["vocabulary_added"] == tuned.data.added
    assert sha256(source) == before, "fine-tuning never writes the checkpoint it starts from"


def test_a_grown_run_resumes_exactly(tmp_path, source, new_corpus):
    straight = start({}, config(new_corpus, max_steps=20), tmp_path / "a", init_from=str(source))
    straight.run()
    interrupted = start({}, config(new_corpus, max_steps=20), tmp_path / "b", init_from=str(source))
    with pytest.raises(TrainingInterrupted):
        interrupted.run(InterruptAt(10))  # the trainer tells its listener every 10 steps
    resumed = resume(str(interrupted.run_dir), {})
    assert resumed.data.vocabulary == straight.data.vocabulary and resumed.step == 10
    resumed.run()
    a = checkpoint.load(straight.run_dir / "last.pt").weights
    b = checkpoint.load(interrupted.run_dir / "last.pt").weights
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_cli_names_what_it_added_and_the_grown_model_is_used_like_any_other(tmp_path, source, new_corpus):
    before = sha256(source)
    root = tmp_path / "runs"
    trained = run_cli(
        "train", str(new_corpus), "--init-from", str(source), "--max-steps", "4", "--max-time", "0",
        "--precision", "fp32", "--sample-every", "0", "--checkpoints", str(root), "--batch-size", "8",
        "--seq-len", "32",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    old = len(checkpoint.load(source).vocabulary)
    assert f"vocabulary {old} -> {old + 8}: added 'é' 'ï' '—' '“' '”' '日' '本' '語'" in trained.stderr
    (run,) = root.iterdir()
    sampled = run_cli("sample", "-c", str(run), "-p", "Café ", "-n", "20", "--seed", "1")
    assert sampled.returncode == 0 and sampled.stdout.startswith("Café "), sampled.stderr
    scored = run_cli("eval", str(new_corpus), "-c", str(run), "--json")
    assert scored.returncode == 0 and json.loads(scored.stdout)["characters"] > 0, scored.stderr
    traced = run_cli("inspect-gates", "-c", str(run), "--text", NEW_TEXT * 3)
    assert traced.returncode == 0, traced.stderr
    assert sha256(source) == before


def test_the_python_api_fine_tunes_across_vocabularies(tmp_path, source, new_corpus):
    run = charlstm.train(new_corpus, tmp_path, init_from=source.parent, max_steps=3, batch_size=8, seq_len=32,
                         eval_every=3, sample_every=0, precision="fp32", device="cpu")  # fmt: skip
    model = charlstm.load(run)
    assert "日" in model.vocabulary and model.score(NEW_TEXT * 4).characters == len(NEW_TEXT * 4) - 1


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory, source, new_corpus):
    """A run grown from `source` by NEW_TEXT's characters, two steps: what export must carry."""
    tuned = start(
        {}, config(new_corpus, max_steps=2, eval_every=2), tmp_path_factory.mktemp("grown"), init_from=str(source)
    )
    tuned.run()
    return tuned.run_dir


def test_a_grown_run_exports_with_the_characters_it_added(tmp_path, capsys, source, grown_run):
    """`charlstm export` of a grown run: the page (and ONNX, where its packages are here) carry the
    grown vocabulary, and in ONNX an added character's id steps to the logits charlstm's own
    step gives, so the added rows went out with the rest."""
    model, grown, _ = checkpoint.load_model(grown_run)
    old = checkpoint.load(source).vocabulary
    assert grown.chars.startswith(old.chars) and set(grown.chars) - set(old.chars) == set(NEW_TEXT) - set(old.chars)
    page, onnx_file = tmp_path / "model.html", tmp_path / "model.onnx"
    with_onnx = importlib.util.find_spec("onnx") is not None
    code, out, err = invoke(
        capsys, "export", str(grown_run), "--html", str(page), *(["--onnx", str(onnx_file)] if with_onnx else [])
    )
    assert code == 0 and f"wrote {page}" in out, err
    (description,) = re.findall(
        r'<script type="application/json" id="charlstm-model">(.*?)</script>', page.read_text(encoding="utf-8"), re.S
    )
    assert json.loads(description)["vocabulary"] == grown.chars
    if not with_onnx:
        return
    import onnx

    proto = onnx.load(onnx_file)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata[export_onnx.METADATA_VOCABULARY]) == grown.chars
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file))
    stepper = Stepper(model)
    ids = grown.encode("日本").long()
    state = {i.name: torch.zeros(model.config.layers, 1, model.config.hidden).numpy() for i in session.get_inputs()[1:]}
    charlstm_state = stepper.initial_state(1)
    for id_ in ids:
        logits, *next_state = session.run(None, {"id": id_.view(1).numpy(), **state})
        state = dict(zip(state, next_state, strict=True))
        want, charlstm_state, _ = stepper.step(id_.view(1), charlstm_state)
        assert logits.shape[-1] == len(grown)
        torch.testing.assert_close(torch.from_numpy(logits), want, rtol=1e-5, atol=1e-5)


def test_the_page_of_a_grown_run_samples_from_the_characters_it_added(tmp_path, browser_page, grown_run):
    model, grown, _ = checkpoint.load_model(grown_run)
    page_file = tmp_path / "model.html"
    page_file.write_text(html_page(model, grown, "grown"), encoding="utf-8")
    page = browser_page.open(page_file)
    assert page.evaluate("charlstm.info.vocabulary") == grown.chars
    # a prime of added characters is one the page knows, not one it "never saw"
    assert len(page.evaluate("charlstm.sample('Café 日本', 30, {seed: 3})")) == 30
