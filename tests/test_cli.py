"""The command line as a user meets it: every mistake is one line, an exit code, no traceback."""

import io
import os
import pty
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import typer

from charlstm.cli import app, main
from charlstm.config import ModelConfig, TrainConfig, parse_duration
from tests.helpers import TINY_MODEL, invoke, run_cli, train_args


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, trained_run):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "one.txt").write_text("a")
    (d / "short.txt").write_text("hello world\n" * 3)
    (d / "latin1.txt").write_bytes(b"caf\xe9 " * 2000)
    (d / "binary.bin").write_bytes(bytes(range(256)) * 100)
    (d / "noise.pt").write_bytes(os.urandom(2048))
    good = (trained_run / "last.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 3])
    (d / "prime.txt").write_text("Ω")
    (d / "runs").mkdir()
    (d / "unsaved").mkdir()
    (d / "unsaved" / "config.json").write_text("{}")  # a run stopped before its first save
    return d


BAD_INPUTS = [
    # (arguments, words the one line must contain)
    (["train", "{bad}/missing.txt"], "does not exist"),
    (["train", "{bad}/runs"], "no text files in"),
    (["train", "{bad}/*.nothing"], "no text files in"),
    (["train", "{bad}/empty.txt"], "is empty"),
    (["train", "{bad}/one.txt"], "shorter than"),
    (["train", "{bad}/short.txt"], "shorter than"),
    (["train", "{bad}/latin1.txt"], "is not valid utf-8 (byte 3); pass --encoding (e.g. latin-1)"),
    (["eval", "{bad}/latin1.txt", "--checkpoint", "{run}"], "is not valid utf-8 (byte 3); pass --encoding"),
    # sample has no --encoding to point at.
    (
        ["sample", "--checkpoint", "{run}", "--prime-file", "{bad}/latin1.txt"],
        "not valid utf-8 (byte 3); save it as utf-8",
    ),
    (["train", "{bad}/binary.bin"], "binary"),
    (["train", "{corpus}", "--hidden", "0"], "--hidden must be at least 1"),
    (["train", "{corpus}", "--layers", "-2"], "--layers must be at least 1"),
    (["train", "{corpus}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "{corpus}", "--val-frac", "1.0"], "--val-frac must be in [0, 1)"),
    (["train", "{corpus}", "--val-frac", "0.0001"], "validation split"),
    (["train", "{corpus}", "--device", "tpu"], "--device must be"),
    (["train", "{corpus}", "--cell", "transformer"], "--cell must be lstm, gru, indylstm or rnn"),
    (["train", "{corpus}", "--max-time", "soon"], "duration"),
    (["train", "{corpus}", "--lr", "nan"], "--lr must be a positive number"),
    (["train", "{corpus}", "--dropout", "1"], "--dropout must be in [0, 1)"),
    (["train", "{corpus}", "--errors", "bogus"], "--errors must be strict, replace or ignore, got 'bogus'"),
    (["train", "{corpus}", "--encoding", "klingon"], "--encoding names no encoding this Python knows: 'klingon'"),
    # A value that looks like a setting's name is shown as typed, not spelled as that setting's flag.
    (["train", "{corpus}", "--encoding", "{{max_time}}"], "no encoding this Python knows: '{max_time}'"),
    (["train", "{corpus}", "--max-time", "{{lr}}"], "--max-time is not a duration: '{lr}'"),
    (["sample", "--checkpoint", "{run}", "--prime-file", "{bad}/missing.txt"], "prime file"),
    (["train", "{corpus}", "--layers", "two"], "--layers"),
    (["train", "--resume", "{bad}/runs"], "no last.pt"),
    (["train", "{corpus}", "--checkpoints", "{bad}/one.txt/runs"], "cannot create run folder"),
    (["train", "--resume", "{run}", "--hidden", "64"], "--resume takes the corpus and model"),
    (["sample", "--checkpoint", "{bad}/missing.pt"], "does not exist"),
    (["sample", "--checkpoint", "{bad}/noise.pt"], "not a readable checkpoint"),
    (["sample", "--checkpoint", "{bad}/truncated.pt"], "not a readable checkpoint"),
    (["sample", "--checkpoint", "{bad}/runs"], "holds no checkpoint and no trained run; train one: charlstm train"),
    (["sample", "--checkpoint", "{runs}"], "holds runs, not a checkpoint; its newest trained run is "),
    (["sample", "--checkpoint", "{bad}/unsaved"], "unsaved has no best.pt or last.pt yet"),
    # refused before the replay, whose tables would otherwise come first
    (["inspect-gates", "--checkpoint", "{run}", "--html", "{bad}/runs"], "runs: it is a folder; name a file"),
    (["export", "{run}", "--html", "{bad}/runs"], "runs: it is a folder; name a file"),
    (["sample", "--checkpoint", "{run}", "-t", "-1"], "--temperature must be"),
    (["sample", "--checkpoint", "{run}", "-t", "nan"], "--temperature must be"),
    (["sample", "--checkpoint", "{run}", "--top-k", "-3"], "--top-k"),
    (["sample", "--checkpoint", "{run}", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["sample", "--checkpoint", "{run}", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["sample", "--checkpoint", "{run}", "-n", "-5"], "--length must be >= 0"),
    (["sample", "--checkpoint", "{run}", "-p", "Ωmega"], "never saw: 'Ω'"),
    (["sample", "--checkpoint", "{run}", "--prime-file", "{bad}/prime.txt"], "never saw: 'Ω'"),
    (["sample", "--checkpoint", "{run}", "--temperature", "hot"], "--temperature"),
    (["sample", "--bogus"], "No such option"),
    (["eval", "{corpus}", "--checkpoint", "{run}", "--precision", "fp16"], "--precision must be"),
    (["eval", "{corpus}", "--checkpoint", "{run}", "--device", "tpu"], "--device must be"),
    (["eval", "{bad}/runs", "--checkpoint", "{run}"], "no text files in"),
    (["eval", "{bad}/prime.txt", "--checkpoint", "{run}"], "never saw: 'Ω'"),
    (["corpus"], "missing command (see: charlstm corpus --help)"),
    (["corpus", "get"], "Missing argument 'NAME'. (see: charlstm corpus get --help)"),
    (["corpus", "get", "shakespeare"], "no corpus named 'shakespeare'; known: enwik8, tinyshakespeare"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_a_nonzero_exit(
    capsys, tmp_path, bad_files, small_corpus, trained_run, args, expected
):
    places = {"bad": bad_files, "corpus": small_corpus, "run": trained_run, "runs": trained_run.parent}
    args = [a.format(**places) for a in args]
    if args[0] == "train":
        args += ["--max-steps", "1"] + ([] if "--checkpoints" in args else ["--checkpoints", str(tmp_path / "runs")])
    checkpoints_before = {p: p.read_bytes() for p in trained_run.iterdir()}
    code, out, err = invoke(capsys, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("charlstm: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err + out
    assert {p: p.read_bytes() for p in trained_run.iterdir()} == checkpoints_before
    assert not list((tmp_path / "runs").glob("*/*.pt"))


@pytest.mark.parametrize("where", [0, 1, 4], ids=["before the command", "after it", "last"])
def test_debug_shows_the_traceback(capsys, bad_files, where):
    args = ["sample", "--checkpoint", str(bad_files / "missing.pt")]
    args.insert(where, "--debug")
    with pytest.raises(Exception, match="does not exist"):
        main(args)


def test_sample_streams_the_asked_number_of_characters(capsys, trained_run):
    code, out, err = invoke(
        capsys, "sample", "--checkpoint", str(trained_run), "-p", "ROMEO:", "-n", "120", "--seed", "3"
    )
    assert code == 0 and err == ""
    assert out.startswith("ROMEO:") and out.endswith("\n")
    assert len(out) == len("ROMEO:") + 120 + 1
    _, again, _ = invoke(capsys, "sample", "--checkpoint", str(trained_run), "-p", "ROMEO:", "-n", "120", "--seed", "3")
    assert again == out


def test_sample_defaults_to_the_newest_runs_best_checkpoint(capsys, tmp_path, trained_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained_run, tmp_path / "checkpoints" / trained_run.name)
    code, out, _ = invoke(capsys, "sample", "-n", "10", "-t", "0")
    assert code == 0 and len(out) == 1 + 10 + 1


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\nfrom charlstm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "sample" in result.stdout
    assert run_cli("--version").stdout.startswith("charlstm ")


def test_every_command_has_help_with_examples(capsys):
    group = typer.main.get_command(app)
    commands = [
        (name, *([sub] if sub else []))
        for name, command in group.commands.items()
        for sub in (getattr(command, "commands", None) or [None])  # a group's commands: corpus list, corpus get
    ]
    assert {("train",), ("serve",), ("corpus", "get")} <= set(commands), "the app's commands are all listed"
    for command in commands:
        code, out, _ = invoke(capsys, *command, "--help")
        assert code == 0, command
        assert "Examples" in out and f"charlstm {' '.join(command)}" in out, command


def test_train_help_states_the_real_defaults():
    """Every training and model option's help states its dataclass default (rendered from
    charlstm/config.py, which imports no torch, so `--help` stays fast)."""
    defaults = asdict(TrainConfig()) | asdict(ModelConfig(vocab_size=1))
    stated = {}
    for param in typer.main.get_command(app).commands["train"].params:
        if param.param_type_name == "option" and param.name in defaults:
            found = re.search(r"\[default: ([^\]]+)\]", param.help or "")
            assert found, f"{param.opts[0]} states no default"
            stated[param.name] = found.group(1)
    assert len(stated) >= 20, stated
    for name, text in stated.items():
        default = defaults[name]
        if name == "max_time":
            assert parse_duration(text) == default, name
        elif isinstance(default, str):
            assert text == default, name
        else:
            sized = re.fullmatch(r"sized for the budget, or (\S+) with --max-steps", text)
            assert float(sized.group(1) if sized else text) == default, name


def test_help_shows_every_default_it_states():
    """Typer renders help through Rich, which reads `[...]` as markup: a default written
    into the help text must be escaped, or it vanishes from what the user sees."""
    for name, command in typer.main.get_command(app).commands.items():
        stated = [text for param in command.params for text in re.findall(r"\[default: [^\]]+\]", param.help or "")]
        if stated:
            shown = run_cli(name, "--help", env={"COLUMNS": "300"}).stdout
            for text in stated:
                assert text in shown, (name, text)


def run_in_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """`python -m charlstm ARGS` with a pseudo-terminal for stdout and stderr; the exit
    code and what it showed, colour codes removed."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "charlstm", *args], stdout=terminal, stderr=terminal, cwd=cwd, env=env
    )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return process.wait(timeout=120), re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())


def test_text_with_brackets_reaches_the_terminal_as_written(tmp_path):
    """On a terminal Rich prints the prime and the inspected text's name; `[i]` is not
    italics to us and `[/a]` is not a broken tag: both are text, shown as typed."""
    corpus = tmp_path / "code.txt"
    corpus.write_text("".join(f"x[i] = y[/a] + {i % 10}\n" for i in range(600)), encoding="utf-8")
    trained = run_cli("train", str(corpus), *TINY_MODEL, "--max-steps", "4", "--max-time", "0", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    code, shown = run_in_terminal("sample", "-p", "x[i] = y[/a]", "-n", "5", cwd=tmp_path)
    assert code == 0, shown
    assert "x[i] = y[/a]" in shown
    file = tmp_path / "y[/a]"
    file.mkdir(parents=True)
    (file / "b[i].txt").write_text("x[i] = y[/a]", encoding="utf-8")
    code, shown = run_in_terminal("inspect-gates", "--file", str(file / "b[i].txt"), cwd=tmp_path)
    assert code == 0, shown
    assert f"{file / 'b[i].txt'}, 12 characters" in shown


def test_inspect_gates_refuses_an_export_into_a_missing_folder_before_working(trained_run, tmp_path):
    result = run_cli("inspect-gates", "--checkpoint", str(trained_run), "--json", str(tmp_path / "no" / "t.json"))
    assert result.returncode == 1
    assert (
        result.stderr
        == f"charlstm: error: cannot write {tmp_path / 'no' / 't.json'}: there is no folder {tmp_path / 'no'}\n"
    )
    assert result.stdout == ""


def test_sample_piped_into_head_ends_quietly(trained_run):
    """Quietly and with exit 0: the reader got what it wanted, and `set -o pipefail` scripts go on
    (click's own handling of the closed pipe exited 1)."""
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m charlstm sample --checkpoint {trained_run} -n 100000 | head -c 300",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(result.stdout) == 300
    assert result.stderr == "" and result.returncode == 0


def test_piped_output_has_no_escape_codes(trained_run):
    result = run_cli("sample", "--checkpoint", str(trained_run), "-n", "50", "-p", "KING")
    assert result.returncode == 0 and "\x1b[" not in result.stdout and result.stdout.startswith("KING")


def test_train_end_to_end_on_the_command_line(tmp_path, small_corpus):
    result = run_cli(*train_args(small_corpus, tmp_path, steps=20, eval_every=10, sample_every=10))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "step     10 | train" in result.stderr and "sample at step 10" in result.stderr
    assert "\x1b[" not in result.stderr
    (run,) = tmp_path.iterdir()
    payload = torch.load(run / "last.pt", weights_only=True)
    assert payload["resume"]["step"] == 20


def test_ctrl_c_saves_last_and_exits_130(tmp_path, small_corpus):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charlstm",
            "train",
            str(small_corpus),
            "--max-time",
            "0",
            "--eval-every",
            "7",
            "--checkpoints",
            str(tmp_path),
            *TINY_MODEL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import signal
    import time

    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("*/last.pt")):
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "charlstm train --resume" in err
    (run,) = tmp_path.iterdir()
    assert torch.load(run / "last.pt", weights_only=True)["resume"]["step"] >= 7


def test_runs_killed_at_random_moments_and_resumed_end_bit_identical(tmp_path, small_corpus):
    """SIGKILL (no chance to clean up) several times, resume each time, compare weights."""
    import random
    import signal
    import time

    cpu = ("--device", "cpu")  # bit-identical needs the CPU: cuDNN's RNN backward is not deterministic
    straight = run_cli(*train_args(small_corpus, tmp_path / "straight", *cpu, steps=120, eval_every=5))
    assert straight.returncode == 0, straight.stderr
    root = tmp_path / "killed"
    command = [sys.executable, "-m", "charlstm", *train_args(small_corpus, root, *cpu, steps=120, eval_every=5)]
    rng = random.Random(7)
    kills = 0
    while True:
        saved = [p.stat().st_mtime_ns for p in root.glob("*/last.pt")]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            if [p.stat().st_mtime_ns for p in root.glob("*/last.pt")] != saved:
                break  # this process has trained and saved: kill it mid-run from here
            time.sleep(0.02)
        if kills < 4 and process.poll() is None:
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
            if process.returncode == -signal.SIGKILL:
                kills += 1
        else:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            break
        runs = list(root.iterdir())
        if runs and (runs[0] / "last.pt").exists():
            (run,) = runs
            command = [sys.executable, "-m", "charlstm", "train", "--resume", str(run)]
    assert kills >= 3
    (run,) = root.iterdir()
    (reference,) = (tmp_path / "straight").iterdir()
    a = torch.load(reference / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["resume"]["step"] == b["resume"]["step"] == 120
    listed = sorted(p.name for p in run.iterdir())
    assert listed == ["best.pt", "config.json", "last.pt", "metrics.jsonl", "status.json"]
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_output_survives_an_ascii_only_locale(trained_run):
    result = run_cli(
        "sample",
        "--checkpoint",
        str(trained_run),
        "-n",
        "20",
        "-p",
        "ROMEO",
        env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"},
    )
    assert result.returncode == 0 and result.stdout.startswith("ROMEO")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_one_clear_error(capsys, tmp_path, small_corpus):
    code, _, err = invoke(capsys, "train", str(small_corpus), "--device", "cuda", "--checkpoints", str(tmp_path))
    assert code == 1 and "no usable CUDA GPU" in err and err.count("\n") == 1


@pytest.mark.parametrize("cell", ["gru", "indylstm", "rnn"])
def test_every_cell_type_trains_samples_and_is_inspected(capsys, tmp_path, small_corpus, cell):
    code, _, err = invoke(capsys, *train_args(small_corpus, tmp_path, "--cell", cell, steps=6, eval_every=3))
    assert code == 0, err
    (run,) = tmp_path.iterdir()
    code, out, _ = invoke(capsys, "sample", "--checkpoint", str(run), "-n", "40", "--seed", "0")
    assert code == 0 and len(out) == 1 + 40 + 1
    code, out, err = invoke(capsys, "inspect-gates", "--checkpoint", str(run), "--text", "ROMEO:\nO", "--unit", "0")
    assert code == 0, err
    expected = {"gru": "L0.hidden.0", "indylstm": "L0.cell.0", "rnn": "L0.hidden.0"}[cell]
    assert out.splitlines()[0] == f"pos\tchar\t{expected}"
    assert ("Gate saturation" in err) == (cell != "rnn")


def test_eval_scores_any_text_against_the_training_validation_loss(capsys, tmp_path, trained_run, small_corpus):
    import json
    import math

    text = small_corpus.read_text()
    val = tmp_path / "val.txt"
    val.write_text(text[len(text) - int(len(text) * 0.1) :])
    code, out, err = invoke(capsys, "eval", str(val), "--checkpoint", str(trained_run / "last.pt"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["characters"] >= len(val.read_text()) - 64
    assert result["bpc"] == pytest.approx(result["loss"] / math.log(2))
    trained = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
    assert result["loss"] == pytest.approx(trained, abs=0.05)
    code, out, _ = invoke(capsys, "eval", str(val), "--checkpoint", str(trained_run))
    assert code == 0 and out.startswith(f"{result['loss']:.4f} nats/char")


def test_eval_names_unknown_characters_or_skips_them(capsys, tmp_path, trained_run):
    text = tmp_path / "t.txt"
    text.write_text("ROMEO: Ω and more words here\n" * 20)
    code, _, err = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run))
    assert code == 1 and "never saw: 'Ω'" in err
    code, out, _ = invoke(capsys, "eval", str(text), "--checkpoint", str(trained_run), "--skip-unknown")
    assert code == 0 and "bits/char" in out


def test_train_on_a_folder_of_text_files(capsys, tmp_path, small_corpus):
    folder = tmp_path / "texts"
    (folder / "act2").mkdir(parents=True)
    text = small_corpus.read_text()
    (folder / "act1.txt").write_text(text[:30_000])
    (folder / "act2" / "scene.txt").write_text(text[30_000:])
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\x00\x00")
    code, _, err = invoke(capsys, *train_args(folder, tmp_path / "runs", steps=4, eval_every=2))
    assert code == 0, err
    assert "corpus texts (2 files)" in err
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("texts-")
    code, _, err = invoke(capsys, "train", "--resume", str(run), "--max-steps", "6")
    assert code == 0 and "resumed at step 4" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sample_on_a_terminal_shows_the_prime_in_colour_and_headers_dimmed(trained_run, monkeypatch):
    """A terminal gets the prime in bold cyan and each sample's header dimmed; a pipe gets
    the same text plain (the other sample tests)."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for many in ("1", "2"):
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", "--checkpoint", str(trained_run), "-p", "AB", "-n", "5", "--seed", "1", "-N", many])
        assert exit_info.value.code == 0
    out = terminal.getvalue()
    assert out.startswith("\x1b[1;36mAB\x1b[0m"), repr(out[:40])
    assert "\x1b[2m--- sample 0 (0 to 1), seed 1 ---\x1b[0m\n\x1b[1;36mAB\x1b[0m" in out
    assert "\x1b[2m--- sample 1 (0 to 1), seed 2 ---\x1b[0m\n" in out


def test_train_writes_its_log_on_stderr_and_its_run_folder_on_stdout(capsys, tmp_path, small_corpus):
    """`charlstm train > train.log` wrote an empty file; a script now gets the run folder:
    run=$(charlstm train ...)."""
    code, out, err = invoke(capsys, *train_args(small_corpus, tmp_path, steps=2))
    (run,) = tmp_path.iterdir()
    assert code == 0 and out == f"{run}\n"
    assert "done: 2 steps" in err and f"sample it: charlstm sample --checkpoint {run}" in err
