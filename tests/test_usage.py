"""How the command line answers a mistake in how it was typed, over every option of every command.

README's rule: a value an option never takes, malformed (`--threads abc`) or out of its range
(`-n -5`), is one line and exit 2, as Typer's own refusals are; anything else is exit 1. The
test walks the app itself, so an option added without a bad value here fails it.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import typer.main

from charlstm import api
from charlstm.cli import app
from charlstm.config import SamplingConfig
from charlstm.errors import SettingError
from tests.helpers import invoke

# A value each option never takes, by command; the line must name the option.
BAD: dict[str, dict[str, str]] = {
    "train": {
        "--max-time": "5x",
        "--max-steps": "-1",
        "--cell": "transformer",
        "--layers": "0",
        "--hidden": "0",
        "--embedding": "0",
        "--dropout": "1",
        "--batch-size": "0",
        "--seq-len": "0",
        "--batching": "shuffled",
        "--lr": "0",
        "--warmup-steps": "-1",
        "--weight-decay": "-1",
        "--grad-clip": "-1",
        "--eval-every": "0",
        "--sample-every": "-1",
        "--val-frac": "1",
        "--val-chars": "-1",
        "--final-val": "all",
        "--seed": "abc",
        "--device": "tpu",
        "--precision": "fp16",
        "--encoding": "klingon",
        "--errors": "bogus",
        "--threads": "abc",
    },
    "sample": {
        "--temperature": "-1",
        "--top-k": "-1",
        "--top-p": "0",
        "--prime": "",
        "--length": "-5",
        "--num-samples": "0",
        "--stop": "",
        "--min-length": "-1",
        "--seed": "abc",
        "--novel": "0",
        "--adapt-passes": "0",
        "--threads": "abc",
    },
    "serve": {
        "--port": "70000",
        "--max-body": "0",
        "--max-length": "0",
        "--max-samples": "0",
        "--max-rows": "0",
        "--max-sessions": "0",
        "--session-ttl": "5x",
        "--api-key": " ",
        "--threads": "abc",
    },
    "eval": {
        "--encoding": "klingon",
        "--device": "tpu",
        "--precision": "fp16",
        "--worst": "-1",
        "--threads": "abc",
        "--lr": "0",
        "--segment": "0",
    },
    "inspect-gates": {
        "--view": "bits",
        "--gate": "rest",
        "--layer": "-1",
        "--unit": "-1",
        "--length": "0",
        "--show": "-1",
        "--seed": "abc",
        "--threads": "abc",
    },
    "synth": {"--chars": "0", "--seed": "abc"},
}
ANY_VALUE = {
    "--checkpoint", "--resume", "--init-from", "--checkpoints", "--prime-file", "--onnx", "--html", "--json",
    "--npz", "--text", "--file", "--host", "--to", "--adapt-to",
}  # fmt: skip
"""Options that take any path or text: a wrong one is a missing file or the like (exit 1)."""


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def _valued_options():
    for name, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag and param.opts[0] != "--help":
                yield name, param.opts[0]


def test_every_option_that_takes_a_value_has_a_bad_one_here():
    missing = [(c, o) for c, o in _valued_options() if o not in ANY_VALUE and o not in BAD.get(c, {})]
    assert not missing, f"give these a value they never take in BAD: {missing}"
    assert {(c, o) for c, opts in BAD.items() for o in opts} <= set(_valued_options()), "BAD names no such option"


def _base(command: str, run: Path, corpus: Path, tmp_path: Path) -> list[str]:
    """Arguments that would work, so that only the bad option can be what is refused (a run
    that went ahead anyway would be tiny)."""
    return {
        "train": ["train", str(corpus), "--max-steps", "1", "--hidden", "8", "--checkpoints", str(tmp_path)],
        "sample": ["sample", "-c", str(run), "-n", "5"],
        "serve": ["serve", "-c", str(tmp_path / "missing.pt")],
        "eval": ["eval", str(corpus), "-c", str(run)],
        "inspect-gates": ["inspect-gates", "-c", str(run), "--text", "the"],
        "synth": ["synth", "copy", str(tmp_path / "copy.txt")],
    }[command]


CASES = [(command, option, value) for command, options in BAD.items() for option, value in options.items()]


@pytest.mark.parametrize(("command", "option", "value"), CASES, ids=[f"{c} {o} {v!r}" for c, o, v in CASES])
def test_a_value_an_option_never_takes_is_one_line_and_exit_2(
    capsys, tmp_path, trained_run, small_corpus, command, option, value
):
    code, out, err = invoke(capsys, *_base(command, trained_run, small_corpus, tmp_path), option, value)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("charlstm: error: ") and option in err, err
    assert not list(tmp_path.glob("*/*.pt")) and not (tmp_path / "copy.txt").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["sample", "-n", "-5"], "charlstm: error: --length must be >= 0, got -5\n"),
        (["train", "--max-time", "5x"], "charlstm: error: --max-time is not a duration: '5x'; write e.g. 90s, "),
        (["synth", "cpy", "out.txt"], "charlstm: error: TASK must be copy or brackets, got 'cpy'\n"),
    ],
)
def test_the_line_spells_the_flag_or_argument_the_user_typed(capsys, args, line):
    code, _, err = invoke(capsys, *args)
    assert code == 2 and err.startswith(line)


def test_anything_else_exits_1(capsys, tmp_path):
    code, _, err = invoke(capsys, "sample", "-c", str(tmp_path / "missing.pt"))
    assert code == 1 and "does not exist" in err


def test_bare_charlstm_lists_the_commands_and_points_to_help(capsys):
    """It used to print only 'charlstm: error: Missing command.'"""
    code, out, err = invoke(capsys)
    assert code == 2
    assert all(name in out for name in ("train", "sample", "eval", "inspect-gates", "corpus"))
    assert err == "charlstm: error: missing command; the commands are listed by: charlstm --help\n"


def test_usage_lines_name_arguments_in_capitals(capsys):
    for args, usage in (
        (["eval"], "charlstm eval [OPTIONS] TEXT"),
        (["synth"], "charlstm synth [OPTIONS] TASK OUT"),
        (["train"], "charlstm train [OPTIONS] [CORPUS]"),
        (["corpus", "get"], "charlstm corpus get [OPTIONS] NAME"),
    ):
        code, out, _ = invoke(capsys, *args, "--help")
        assert code == 0 and usage in out and "{" not in out.split("\n\n")[0], out


def test_train_help_says_shape_and_batch_are_sized_for_the_budget(capsys):
    """--hidden showed [default: 256] though a time-budgeted run is sized (2x128, batch 16)."""
    code, out, _ = invoke(capsys, "train", "--help")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert "Units per layer. [default: sized for the budget, or 256 with --max-steps]" in flat
    assert "Parallel streams. [default: sized for the budget, or 32 with --max-steps]" in flat


# --- the Python API reads keywords, the same validation as the flags -------------------------------


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"length": -5}, "length must be >= 0, got -5"),
        ({"num_samples": 0}, "num_samples must be at least 1, got 0"),
        ({"min_length": 9, "length": 3}, "min_length 9 is above length 3, the most a sample may have; "),
        ({"prime": ""}, "prime is empty; leave it out to start from a newline"),
    ],
)
def test_python_errors_name_the_keyword_not_the_flag(settings, line):
    """`model.generate(length=-5)` said '--length must be >= 0'; Python has no --length."""
    with pytest.raises(SettingError) as error:
        SamplingConfig(**settings)
    assert str(error.value).startswith(line) and "--" not in str(error.value)


def test_generate_raises_the_keyword_spelling(trained_run):
    model = api.load(trained_run)
    with pytest.raises(SettingError, match=r"^length must be >= 0, got -5$"):
        model.generate(length=-5)


def test_the_apis_keywords_are_sampling_configs_fields_with_its_defaults():
    """Model.generate and Model.stream spell their keywords out for readers and editors; this
    holds them to SamplingConfig, the one description of the sampling settings."""
    defaults = {f.name: f.default for f in fields(SamplingConfig)}
    for method, left_out in (
        (api.Model.generate, {"redraws"}),
        (api.Model.stream, {"redraws", "num_samples", "novel"}),
    ):
        keywords = {n: p.default for n, p in inspect.signature(method).parameters.items() if n != "self"}
        assert keywords == {n: d for n, d in defaults.items() if n not in left_out}, method.__name__
