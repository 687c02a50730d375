"""`charlstm export`: the ONNX step and the HTML page compute what charlstm's own step computes.

Models here are CharLSTMs at their initial weights times two (larger activations than at
initialisation, gates away from 0.5, still not chaotic, so 300 free-running steps stay
comparable), one per cell type, or the tiny trained run of conftest. Tolerances: ONNX
Runtime and PyTorch both sum in float32, in different orders: rtol = atol = 1e-5 on
logits and states after every one of 300 steps. The page sums float32 weights in double
precision: atol 1e-5 on the logits after a 103-character prime (measured: under 1e-6).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm import checkpoint as checkpoints
from charlstm import export_onnx
from charlstm.config import CELL_TYPES, ModelConfig
from charlstm.errors import CharlstmError
from charlstm.export import export
from charlstm.export_html import html_page
from charlstm.model import CharLSTM, Stepper
from charlstm.sample import SamplingConfig, generate
from charlstm.tokenizer import Vocabulary
from tests.helpers import invoke, run_cli

DOCS = Path(__file__).resolve().parent.parent / "docs" / "export.md"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
PRIME = "The state of a recurrent network is carried from one character to the next, and so is this prime text. "


@pytest.fixture(scope="module")
def text(english) -> str:
    return english[:300]


@pytest.fixture(scope="module")
def vocabulary(english) -> Vocabulary:
    return Vocabulary.from_text(english)


def scaled_model(cell: str, vocabulary: Vocabulary, hidden: int = 32) -> CharLSTM:
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(vocab_size=len(vocabulary), cell=cell, layers=2, hidden=hidden, embedding=16))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.0)
    return model.eval()


def charlstm_trace(model: CharLSTM, ids: torch.Tensor) -> list[list[torch.Tensor]]:
    """[logits, *stacked states] after every step of charlstm's own Stepper."""
    stepper = Stepper(model)
    state = stepper.initial_state(ids.shape[0])
    trace = []
    for t in range(ids.shape[1]):
        logits, state, _ = stepper.step(ids[:, t], state)
        trace.append([logits, *stepper.to_fused_state(state)])
    return trace


# ONNX


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_onnx_step_matches_charlstm_step_over_300_characters(cell, vocabulary, text):
    ort = pytest.importorskip("onnxruntime")
    model = scaled_model(cell, vocabulary)
    session = ort.InferenceSession(export_onnx.onnx_bytes(model, vocabulary))
    names = [i.name for i in session.get_inputs()]
    assert names == ["id", *export_onnx.state_names(model)]
    assert [o.name for o in session.get_outputs()] == ["logits", *(f"next_{n}" for n in names[1:])]
    # two streams at once: the batch dimension is free
    ids = torch.stack([vocabulary.encode(text).long(), vocabulary.encode(text[::-1]).long()])
    state = {name: torch.zeros(2, 2, 32).numpy() for name in names[1:]}
    for t, expected in enumerate(charlstm_trace(model, ids)):
        logits, *new_state = session.run(None, {"id": ids[:, t].numpy(), **state})
        state = dict(zip(names[1:], new_state, strict=True))
        for got, want in zip([logits, *new_state], expected, strict=True):
            torch.testing.assert_close(torch.from_numpy(got), want, **TOLERANCE, msg=lambda m, t=t: f"step {t}: {m}")


def test_onnx_carries_the_vocabulary_and_config(vocabulary):
    onnx = pytest.importorskip("onnx")
    model = scaled_model("gru", vocabulary)
    proto = onnx.load_from_string(export_onnx.onnx_bytes(model, vocabulary))
    onnx.checker.check_model(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata[export_onnx.METADATA_VOCABULARY]) == vocabulary.chars
    assert json.loads(metadata[export_onnx.METADATA_CONFIG])["cell"] == "gru"


def test_onnx_export_of_large_matrices_does_not_depend_on_the_cpu_count(vocabulary):
    """Matrices of 4 MB and more are cut into one block per thread for the CPU step;
    the exported step reads them whole, the same numbers in the same places."""
    model = scaled_model("lstm", vocabulary, hidden=512)
    blocked = Stepper(model).cells[1].weight_hh_blocks
    portable = export_onnx.portable_stepper(model).cells[1].weight_hh_blocks
    assert portable.shape == (512, 2048)
    torch.testing.assert_close(portable, model.recurrent.weight_hh_l1.detach().t(), rtol=0, atol=0)
    if blocked.dim() == 3:  # this machine has more than one thread
        assert export_onnx.unblocked(blocked).equal(portable)


def test_onnx_sampling_loop_of_the_docs_runs_as_written(trained_run, tmp_path):
    """The loop in docs/export.md, run verbatim on an exported model: doc and export cannot drift."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("numpy")
    (block,) = re.findall(r"<!-- sampling loop -->\n```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (tmp_path / "loop.py").write_text(block, encoding="utf-8")
    model, vocabulary, _ = checkpoints.load_model(trained_run)
    (tmp_path / "model.onnx").write_bytes(export_onnx.onnx_bytes(model, vocabulary))
    result = subprocess.run([sys.executable, "loop.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    prime = re.search(r"prime, temperature = \"(.*?)\"", block).group(1)
    length = int(re.search(r"for _ in range\((\d+)\)", block).group(1))
    assert result.stdout.startswith(prime)
    written = result.stdout[len(prime) :].removesuffix("\n")
    assert len(written) == length and not vocabulary.unknown(written)


# The page


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_page_logits_match_charlstm_in_chromium(cell, vocabulary, browser_page, tmp_path):
    model = scaled_model(cell, vocabulary)
    page_file = tmp_path / "model.html"
    page_file.write_text(html_page(model, vocabulary, f"test {cell}"), encoding="utf-8")
    page = browser_page.open(page_file)
    got = torch.tensor(page.evaluate("prime => charlstm.logits(prime)", PRIME), dtype=torch.float64)
    want = charlstm_trace(model, vocabulary.encode(PRIME).long()[None])[-1][0][0].double()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_page_greedy_text_is_charlstms_greedy_text(trained_run, browser_page, tmp_path):
    """The whole loop (prime, step, pick) in the page against charlstm's; top-p this small
    keeps only the likeliest character, so it must be greedy too."""
    model, vocabulary, _ = checkpoints.load_model(trained_run)
    page_file = tmp_path / "model.html"
    page_file.write_text(html_page(model, vocabulary, "trained"), encoding="utf-8")
    page = browser_page.open(page_file)
    want = "".join(generate(model, vocabulary, "The ", 200, SamplingConfig(temperature=0)))
    assert page.evaluate("() => charlstm.sample('The ', 200, {temperature: 0})") == want
    assert page.evaluate("() => charlstm.sample('The ', 200, {temperature: 1, topP: 0.001, seed: 5})") == want


def test_pressing_generate_streams_text_that_the_seed_repeats(trained_run, browser_page, tmp_path):
    """The page's clock is injected (10 ms a reading), so the 25 ms slices hold a few
    characters each, whatever this machine's speed: the text must arrive in many pieces."""
    model, vocabulary, _ = checkpoints.load_model(trained_run)
    page_file = tmp_path / "model.html"
    page_file.write_text(html_page(model, vocabulary, "trained"), encoding="utf-8")
    requests = []
    browser_page.page.on("request", lambda request: requests.append(request.url))
    browser_page.page.add_init_script("{ let now = 0; performance.now = () => (now += 10); }")
    page = browser_page.open(page_file)
    page.evaluate(
        """() => { window.pieces = 0;
        new MutationObserver(() => window.pieces++).observe(document.getElementById('output'), {childList: true}); }"""
    )
    page.fill("#prime", "The ")
    page.fill("#length", "300")
    page.fill("#temperature", "0.9")
    page.fill("#top-p", "0.95")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")
    output = page.text_content("#output")
    assert output.startswith("The ") and len(output) == 4 + 300
    assert not vocabulary.unknown(output)
    assert page.evaluate("window.pieces") > 20
    same = page.evaluate("() => charlstm.sample('The ', 300, {temperature: 0.9, topP: 0.95, seed: 7})")
    assert output == "The " + same
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")
    assert page.text_content("#output") == output
    assert requests == [page_file.resolve().as_uri()], "the page fetched something: it must work offline"


def test_page_says_which_prime_characters_the_model_never_saw(trained_run, browser_page, tmp_path):
    model, vocabulary, _ = checkpoints.load_model(trained_run)
    page_file = tmp_path / "model.html"
    page_file.write_text(html_page(model, vocabulary, "trained"), encoding="utf-8")
    page = browser_page.open(page_file)
    page.fill("#prime", "naïve ☃")
    page.click("#generate")
    assert "never saw" in page.text_content("#status") and "☃" in page.text_content("#status")
    assert page.get_attribute("#status", "class") == "error"
    assert page.text_content("#output") == ""


def test_page_title_and_vocabulary_cannot_break_out_of_the_page(browser_page, tmp_path):
    vocabulary = Vocabulary("\n </script>&'\"a")  # unsorted on purpose: '</' in the page's JSON
    model = scaled_model("rnn", vocabulary)
    page_file = tmp_path / "model.html"
    title = "</title></script><script>console.error('escaped')</script> /*CHARLSTM_MODEL*/"
    page_file.write_text(html_page(model, vocabulary, title), encoding="utf-8")
    page = browser_page.open(page_file)
    assert page.title() == title
    assert page.evaluate("charlstm.info.vocabulary") == vocabulary.chars
    assert len(page.evaluate("charlstm.sample('</script>', 50, {seed: 3})")) == 50


# The command


def test_export_writes_both_files_from_the_cli(trained_run, tmp_path):
    onnx, page = tmp_path / "model.onnx", tmp_path / "model.html"
    result = run_cli("export", str(trained_run), "--onnx", str(onnx), "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert f"wrote {onnx}" in result.stdout and f"wrote {page}" in result.stdout
    assert onnx.stat().st_size > 0 and page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.html", "model.onnx"]  # no temporary left


def test_an_existing_file_is_kept_unless_force(trained_run, tmp_path, capsys):
    page = tmp_path / "model.html"
    page.write_text("mine", encoding="utf-8")
    code, _, err = invoke(capsys, "export", str(trained_run), "--html", str(page))
    assert code == 1 and err == f"charlstm: error: {page} exists; add --force to replace it\n"
    assert page.read_text(encoding="utf-8") == "mine"
    code, out, _ = invoke(capsys, "export", str(trained_run), "--html", str(page), "--force")
    assert code == 0 and f"wrote {page}" in out
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("arguments", "message", "exit_code"),
    [
        (["--html", "{tmp}/missing/model.html"], "cannot write {tmp}/missing/model.html: there is no folder", 1),
        (["--html", "{tmp}"], "it is a folder", 1),
        ([], "nothing to export: give --onnx FILE, --html FILE or both", 2),  # how the command was typed
        (["--onnx", "{tmp}/a", "--html", "{tmp}/a"], "--onnx and --html both name", 2),
    ],
)
def test_bad_outputs_are_one_line_each(trained_run, tmp_path, capsys, arguments, message, exit_code):
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    code, out, err = invoke(capsys, "export", str(trained_run), *arguments)
    assert code == exit_code and out == ""
    assert err.startswith("charlstm: error: ") and message.format(tmp=tmp_path) in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_charlstm_checkpoint_is_refused(tmp_path, capsys):
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    code, _, err = invoke(capsys, "export", str(foreign), "--html", str(tmp_path / "model.html"))
    assert code == 1 and err == f"charlstm: error: {foreign} is not a charlstm checkpoint\n"
    assert not (tmp_path / "model.html").exists()


def test_onnx_without_its_packages_says_how_to_install_them(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what `import onnx` finds when it is not installed
    code, _, err = invoke(capsys, "export", str(trained_run), "--onnx", str(tmp_path / "model.onnx"))
    assert code == 1
    assert err == "charlstm: error: --onnx needs the onnx package: pip install 'charlstm[onnx]'\n"
    assert list(tmp_path.iterdir()) == []


def test_library_refuses_before_reading_the_checkpoint(tmp_path):
    """Output checks come first: a wrong output path is reported even when no run exists yet."""
    with pytest.raises(CharlstmError, match="no folder"):
        export(tmp_path / "no-such-run", None, tmp_path / "missing" / "model.html")


def test_help_shows_the_install_line_whole(capsys):
    code, out, _ = invoke(capsys, "export", "--help")
    assert code == 0 and "charlstm[onnx]" in out and "--force" in out


def test_exported_files_are_readable_as_any_new_file_would_be(trained_run, tmp_path, capsys):
    """The atomic write's temporary file is owner-only (0600); a page meant for sharing gets
    the umask's mode, as a plain new file would (0640 under umask 027)."""
    old = os.umask(0o027)
    try:
        code, _, err = invoke(capsys, "export", str(trained_run), "--html", str(tmp_path / "model.html"))
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "model.html").stat().st_mode) == 0o640
