import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import charlstm
from charlstm.api import Model, SamplingWarning, sampling_config
from charlstm.errors import CharlstmError
from charlstm.inspect import inspect_text
from tests.helpers import run_cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
TINY = {"layers": 2, "hidden": 32, "embedding": 16, "batch_size": 8, "seq_len": 32}


def documented_example() -> str:
    """The first Python block of docs/python-api.md, as a reader copies it."""
    return re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)


def test_the_documented_example_runs_as_written(tmp_path, monkeypatch, capsys, english):
    """The block runs verbatim but for its budget: a few steps of a tiny model, not five minutes."""
    code = documented_example()
    budget = 'max_time="5m")'
    assert code.count(budget) == 1
    code = code.replace(budget, 'max_time="5m", max_steps=12, eval_every=6, sample_every=0, **TINY)')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "titles.txt").write_text(english[:20_000], encoding="utf-8")
    (tmp_path / "test.txt").write_text(english[10_000:13_000], encoding="utf-8")
    namespace = {"TINY": TINY}
    exec(compile(code, str(DOC), "exec"), namespace)
    run, titles, trace = namespace["run"], namespace["titles"], namespace["trace"]
    assert run.parent == Path("checkpoints") and (run / "best.pt").is_file()
    assert len(titles) == 20 and all(isinstance(t, str) and "\n" not in t for t in titles)
    out = capsys.readouterr().out
    streamed, score, shapes = out.rsplit("\n", 3)[:3]
    assert len(streamed) == 200
    assert re.fullmatch(r"Score\(nats=[\d.]+, bits=[\d.]+, characters=\d+\)", score)
    assert tuple(trace.values.shape) == (len("Return the number of items."), 2, 6, 32)
    assert shapes.startswith("('input', 'forget', 'candidate', 'output', 'hidden', 'cell')")


def test_import_charlstm_does_not_import_torch_and_train_stays_the_function():
    code = (
        "import sys, charlstm; assert 'torch' not in sys.modules, 'torch imported'; "
        "import charlstm.trainer; from charlstm import api; "
        "assert charlstm.train is api.train and charlstm.load is api.load, charlstm.train"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_load_without_a_path_takes_the_newest_run(trained_run, tmp_path, monkeypatch):
    shutil.copytree(trained_run, tmp_path / "checkpoints" / trained_run.name)
    monkeypatch.chdir(tmp_path)
    model = charlstm.load()
    assert model.path == Path("checkpoints") / trained_run.name / "best.pt"
    assert "lstm 2x32" in repr(model)


@pytest.fixture(scope="module")
def model(trained_run) -> Model:
    return charlstm.load(trained_run)


def test_generate_is_what_charlstm_sample_prints(model, trained_run):
    texts = model.generate(prime="The", length=60, num_samples=3, stop=" the", temperature=0.9, seed=5)
    result = run_cli(
        "sample", "-c", str(trained_run), "-p", "The", "-n", "60", "-N", "3", "--stop", " the", "-t", "0.9",
        "--seed", "5", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda s: s["sample"])
    assert [s["text"] for s in printed] == texts
    assert [s["seed"] for s in printed] == [5, 6, 7]


def test_stream_is_the_lone_sample_charlstm_sample_streams(model, trained_run):
    streamed = list(model.stream(prime="ROMEO:", length=80, seed=3))
    assert all(len(ch) == 1 for ch in streamed) and len(streamed) == 80
    result = run_cli("sample", "-c", str(trained_run), "-p", "ROMEO:", "-n", "80", "--seed", "3")
    assert result.stdout == "ROMEO:" + "".join(streamed) + "\n"
    assert model.generate(prime="ROMEO:", length=80, seed=3) == ["".join(streamed)]


def test_score_is_what_charlstm_eval_reports(model, trained_run, tmp_path, english):
    text = english[-3000:]
    (tmp_path / "test.txt").write_text(text, encoding="utf-8")
    result = run_cli("eval", str(tmp_path / "test.txt"), "-c", str(trained_run), "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    score = model.score(text)
    assert (score.nats, score.bits, score.characters) == (reported["loss"], reported["bpc"], reported["characters"])


def test_trace_is_the_replay_inspect_gates_shows(model):
    text = "ROMEO: O, speak again."
    trace = model.trace(text)
    assert trace.values.equal(inspect_text(model.model, model.vocabulary, text, keep=None).values)
    assert trace.quantities == ("input", "forget", "candidate", "output", "hidden", "cell")


def test_a_stop_string_the_model_cannot_write_is_warned_about(model):
    with pytest.warns(SamplingWarning, match="never saw"):
        (text,) = model.generate(length=20, stop="Ω", seed=0)
    assert len(text) == 20


def test_bad_settings_are_one_clear_error(model):
    with pytest.raises(CharlstmError, match="^num_samples must be at least 1"):
        model.generate(num_samples=0)
    with pytest.raises(CharlstmError, match="charlstm.train has no option hiden"):
        charlstm.train("corpus.txt", hiden=64)
    with pytest.raises(CharlstmError, match="unknown sampling setting colour"):
        sampling_config(prime="a", colour="red")
    assert sampling_config(prime="a", num_samples=3).num_samples == 3
