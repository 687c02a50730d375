"""`charlstm runs` and what it reads: run folders, finished, interrupted, running, half-written or old."""

from __future__ import annotations

import json
import math
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from charlstm import checkpoint, history, report, runs_table
from charlstm.errors import CharlstmError
from tests.helpers import InterruptAt, invoke, run_cli
from tests.run_folders import LN2, write_run


def states(root: Path, **kwargs) -> dict[str, tuple[str, str | None]]:
    return {run.name: history.state_of(run, **kwargs) for run in history.find_runs(root)}


def test_a_run_is_summarised_from_its_folder(tmp_path):
    write_run(tmp_path, "text-1", val_bpc=[3.0, 2.2, 2.5, 2.0])
    (run,) = history.find_runs(tmp_path)
    s = history.summary(run)
    assert (s["name"], s["corpus"], s["cell"], s["layers"], s["hidden"]) == ("text-1", "text.txt", "lstm", 2, 64)
    assert (s["parameters"], s["steps"], s["elapsed"], s["state"]) == (61_254, 400, 10.0, "finished")
    assert s["best_val_bpc"] == 2.0 and s["val_bpc"] == [3.0, 2.2, 2.5, 2.0]
    assert s["notes"] == []
    assert run.samples == [{"step": 200, "elapsed": 5.0, "text": "sample at 200"}, *run.samples[1:]]


def test_runs_are_listed_most_recently_active_first(tmp_path):
    write_run(tmp_path, "a-old", mtime=1_000_000)
    write_run(tmp_path, "b-newest", mtime=3_000_000)
    write_run(tmp_path, "c-middle", mtime=2_000_000)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "notes.txt").write_text("a file beside the runs")
    assert [r.name for r in history.find_runs(tmp_path)] == ["b-newest", "c-middle", "a-old"]


def test_status_says_finished_interrupted_failed_or_running(tmp_path):
    write_run(tmp_path, "done", state="finished")
    write_run(tmp_path, "stopped-by-hand", state="interrupted", step=250)
    write_run(tmp_path, "nan", state="failed", error="the loss became nan by step 20")
    write_run(tmp_path, "alive", state="running")
    found = states(tmp_path, alive=lambda pid: pid == os.getpid())
    assert found["done"] == ("finished", None)
    assert found["stopped-by-hand"] == ("interrupted", None)
    assert found["nan"] == ("failed", "the loss became nan by step 20")
    assert found["alive"] == ("running", None)


def test_a_running_status_whose_process_is_gone_reads_stopped(tmp_path):
    run = write_run(tmp_path, "killed", state="running")
    state, note = states(tmp_path, alive=lambda pid: False)["killed"]
    assert state == "stopped"
    assert f"charlstm train --resume {run}" in note


def test_a_run_on_another_machine_is_not_checked_from_here(tmp_path):
    write_run(tmp_path, "elsewhere", state="running", host="gpu-box", updated=1000.0)
    checked = []
    state, note = states(tmp_path, alive=checked.append, host="laptop", now=1090.0)["elsewhere"]
    assert (state, checked) == ("running", [])
    assert note == "on gpu-box, last heard from 1m 30s ago (cannot check from here)"


def test_runs_from_before_status_files_are_finished_when_their_budget_was_reached(tmp_path):
    write_run(tmp_path, "old-done", val_bpc=[3.0, 2.0], state=None)
    cut = write_run(tmp_path, "old-cut", val_bpc=[3.0, 2.0], state=None)
    config = json.loads((cut / "config.json").read_text())
    config["train"]["max_steps"] = 1000
    (cut / "config.json").write_text(json.dumps(config))
    found = states(tmp_path)
    assert found["old-done"] == ("finished", None)
    assert found["old-cut"][0] == "unknown" and "older charlstm" in found["old-cut"][1]


def test_half_written_and_older_run_folders_are_listed_with_a_note(tmp_path):
    cut = write_run(tmp_path, "cut-short")
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 500, "elapsed": 12.5, "val_')
    garbled = write_run(tmp_path, "garbled-config")
    (garbled / "config.json").write_text('{"model": {"cell": "ls')
    only_weights = tmp_path / "weights-only"
    only_weights.mkdir()
    (only_weights / "last.pt").write_bytes(b"not read by the listing")
    odd_status = write_run(tmp_path, "odd-status")
    (odd_status / "status.json").write_text('{"state": "dancing"}')
    old_config = write_run(tmp_path, "old-config")
    (old_config / "config.json").write_text(json.dumps({"train": {}}))

    summaries = {s["name"]: s for s in map(history.summary, history.find_runs(tmp_path))}
    assert summaries["cut-short"]["steps"] == 400 and summaries["cut-short"]["val_bpc"] == [3.0, 2.4, 2.1, 2.0]
    assert summaries["cut-short"]["notes"] == ["metrics.jsonl ends in a half-written line (skipped)"]
    assert summaries["garbled-config"]["cell"] is None
    assert "config.json is damaged or half-written (ignored)" in summaries["garbled-config"]["notes"]
    assert summaries["weights-only"]["steps"] == 0 and summaries["weights-only"]["state"] == "unknown"
    assert any("no readable config.json" in note for note in summaries["weights-only"]["notes"])
    assert "status.json names no known state" in summaries["odd-status"]["notes"]
    assert "config.json from an older charlstm: some settings unknown" in summaries["old-config"]["notes"]
    table = runs_table.render_plain(list(summaries.values()))
    assert "note: cut-short: metrics.jsonl ends in a half-written line (skipped)" in table


def test_records_repeated_after_a_resume_replace_the_earlier_ones(tmp_path):
    run = write_run(tmp_path, "resumed", val_bpc=[3.0, 2.5])
    with open(run / "metrics.jsonl", "a") as f:  # killed after step 200's record, resumed from step 100's checkpoint
        for step, bpc in ((200, 2.45), (300, 2.2)):
            f.write(json.dumps({"step": step, "elapsed": step / 40, "val_loss": bpc * LN2}) + "\n")
    (run,) = history.find_runs(tmp_path)
    assert [e["step"] for e in run.evaluations] == [100, 200, 300]
    assert run.val_bpc == pytest.approx([3.0, 2.45, 2.2])


def test_the_sparkline_runs_from_the_highest_block_down_to_the_lowest():
    assert runs_table.sparkline([4.0, 3.0, 2.5, 2.25, 2.0]) == "█▅▃▂▁"
    assert runs_table.sparkline([2.0, 2.0]) == "▅▅"
    assert runs_table.sparkline([]) == ""
    assert runs_table.sparkline([3.0, math.nan, 1.0], runs_table.PLAIN_LEVELS) == "#_"
    long = runs_table.sparkline([100 - i for i in range(1000)])
    assert len(long) == runs_table.SPARK_WIDTH and long[0] == "█" and long[-1] == "▁"


def test_durations_and_counts_read_at_a_glance():
    assert [history.format_duration(s) for s in (0, 42.4, 302, 7500)] == ["0s", "42s", "5m 02s", "2h 05m"]
    assert [history.format_count(n) for n in (None, 950, 61_254, 3_310_000)] == ["?", "950", "61.3k", "3.31M"]


def test_writing_the_status_replaces_it_whole_and_never_stops_training(tmp_path):
    history.write_status(tmp_path, "running", 10, 1.234)
    history.write_status(tmp_path, "finished", 20, 2.5)
    written = json.loads((tmp_path / "status.json").read_text())
    assert written["state"] == "finished" and written["step"] == 20 and written["pid"] == os.getpid()
    assert list(tmp_path.iterdir()) == [tmp_path / "status.json"], "no temporary file is left behind"
    history.write_status(tmp_path / "gone", "failed", 1, 0.0, "boom")
    history.append_sample(tmp_path / "gone", 1, 0.0, "text")
    with pytest.raises(ValueError, match="unknown run state"):
        history.write_status(tmp_path, "sleeping", 1, 0.0)


def test_listing_reads_json_only_and_never_imports_torch(tmp_path):
    write_run(tmp_path, "one")
    code = f"import sys; from charlstm.cli import main; main(['runs', {str(tmp_path)!r}])"
    check = f"import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); {code}"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False"


# --- the command ------------------------------------------------------------------------------


def test_runs_piped_is_a_plain_table_newest_first(tmp_path):
    write_run(tmp_path, "text-a", mtime=1_000_000, cell="gru")
    write_run(tmp_path, "text-b", mtime=2_000_000, val_bpc=[3.5, 2.8], state="interrupted")
    result = run_cli("runs", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "run",
        "corpus",
        "model",
        "params",
        "steps",
        "time",
        "best",
        "val",
        "status",
        "val",
        "bits/char",
    ]
    assert lines[1].split() == [
        "text-b",
        "text.txt",
        "lstm",
        "2x64",
        "61.3k",
        "200",
        "5s",
        "2.800",
        "interrupted",
        "#_",
    ]
    assert lines[2].split() == ["text-a", "text.txt", "gru", "2x64", "61.3k", "400", "10s", "2.000", "finished", "#:._"]
    assert result.stdout.isascii() and "\x1b[" not in result.stdout


def test_runs_json_is_for_programs(capsys, tmp_path):
    write_run(tmp_path, "text-a")
    code, out, err = invoke(capsys, "runs", str(tmp_path), "--json")
    assert code == 0 and err == ""
    (run,) = json.loads(out)
    assert run["name"] == "text-a" and run["state"] == "finished" and run["val_bpc"] == [3.0, 2.4, 2.1, 2.0]


def test_runs_on_a_terminal_draws_a_unicode_sparkline(tmp_path):
    write_run(tmp_path, "text-a")
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm-256color"}
    process = subprocess.Popen([sys.executable, "-m", "charlstm", "runs", str(tmp_path)], stdout=terminal, env=env)
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())
    assert "█▄▂▁" in text and "finished" in text


def test_runs_on_an_empty_or_missing_folder_says_so_in_one_line(capsys, tmp_path):
    code, out, err = invoke(capsys, "runs", str(tmp_path))
    assert (code, out) == (0, "")
    assert err == f"no runs under {tmp_path}/ yet; start one with: charlstm train\n"
    code, out, err = invoke(capsys, "runs", str(tmp_path), "--json")
    assert (code, out) == (0, "[]\n")
    code, out, err = invoke(capsys, "runs", str(tmp_path / "nowhere"))
    assert (code, out) == (1, "")
    assert err == (
        f"charlstm: error: there is no folder {tmp_path / 'nowhere'}; give the folder that holds your runs: "
        "charlstm runs FOLDER\n"
    )


def test_runs_in_a_fresh_folder_is_the_empty_list_not_an_error(tmp_path):
    """No checkpoints/ yet is where every new user starts: the default folder missing is no
    mistake (another folder that is missing still is)."""
    result = run_cli("runs", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == "no runs under checkpoints/ yet; start one with: charlstm train\n"


def test_one_newest_run_rule_for_every_command_that_takes_a_run_by_default(tmp_path):
    write_run(tmp_path, "older", mtime=1_000_000)
    write_run(tmp_path, "newer", mtime=2_000_000)
    write_run(tmp_path, "newest-unsaved", mtime=3_000_000, saved=False)  # killed before its first save
    assert [r.name for r in history.find_runs(tmp_path)][:2] == ["newest-unsaved", "newer"]
    assert history.newest_run(tmp_path).name == "newer"
    # sample, eval, inspect-gates, serve and charlstm.load resolve through checkpoint.resolve; report through load_runs
    assert checkpoint.resolve(None, root=tmp_path) == tmp_path / "newer" / "best.pt"
    assert [r.name for r in report.load_runs([], root=tmp_path)] == ["newer"]
    os.utime(tmp_path / "older" / "last.pt", (4_000_000, 4_000_000))  # any file written makes a run active
    assert history.newest_run(tmp_path).name == checkpoint.resolve(None, root=tmp_path).parent.name == "older"


def test_with_no_saved_run_the_newest_run_is_one_clear_error(tmp_path):
    write_run(tmp_path, "unsaved", saved=False)
    for root in (tmp_path, tmp_path / "nowhere"):
        with pytest.raises(CharlstmError, match=f"^no trained runs under {re.escape(str(root))}/; train one first"):
            history.newest_run(root)


def test_find_runs_refuses_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(CharlstmError, match="is a file"):
        history.find_runs(tmp_path / "f.txt")


# --- what the trainer records ------------------------------------------------------------------


def tiny_config(corpus, **overrides):
    from charlstm.config import TrainConfig

    base = {"corpus": str(corpus), "batch_size": 8, "seq_len": 32, "max_steps": 20, "max_time": 0, "eval_every": 10}
    return TrainConfig(**(base | {"sample_every": 0, "warmup_steps": 2, "device": "cpu"} | overrides))


def test_the_trainer_keeps_its_samples_and_says_where_it_stands(tmp_path, small_corpus):
    from charlstm.runs import start
    from charlstm.trainer import TrainListener

    class WhileRunning(TrainListener):
        def __init__(self):
            self.seen, self.samples = [], []

        def evaluated(self, step, val_loss, improved):
            self.seen.append(json.loads((trainer.run_dir / "status.json").read_text()))

        def sampled(self, step, text):
            self.samples.append(text)

    trainer = start({"layers": 1, "hidden": 32, "embedding": 16}, tiny_config(small_corpus, sample_every=10), tmp_path)
    listener = WhileRunning()
    trainer.run(listener)
    assert [(s["state"], s["step"], s["pid"]) for s in listener.seen] == [("running", n, os.getpid()) for n in (10, 20)]
    (run,) = history.find_runs(tmp_path)
    assert history.state_of(run) == ("finished", None)
    assert (run.steps, len(run.val_bpc)) == (20, 2)
    assert [(s["step"], s["text"]) for s in run.samples] == [(10, listener.samples[0])]
    assert run.samples[0]["elapsed"] == pytest.approx(run.evaluations[0]["elapsed"], abs=0.01)


def test_an_interrupted_or_failed_run_says_so(tmp_path, small_corpus):
    import torch

    from charlstm.runs import start
    from charlstm.trainer import TrainingInterrupted, TrainListener

    model = {"layers": 1, "hidden": 32, "embedding": 16}
    stopped = start(model, tiny_config(small_corpus, eval_every=4), tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        stopped.run(InterruptAt(10))
    (run,) = history.find_runs(tmp_path / "a")
    assert history.state_of(run) == ("interrupted", None)
    assert run.steps == 10 and run.evaluations[-1]["step"] == 8, "the status knows the step past the last evaluation"

    class Poison(TrainListener):
        def evaluated(self, step, val_loss, improved):
            with torch.no_grad():
                failing.model.decoder.bias[0] = math.nan

    failing = start(model, tiny_config(small_corpus), tmp_path / "b")
    with pytest.raises(CharlstmError, match="loss became nan"):
        failing.run(Poison())
    (run,) = history.find_runs(tmp_path / "b")
    state, note = history.state_of(run)
    assert state == "failed" and note.startswith("the loss became nan by step 20")
