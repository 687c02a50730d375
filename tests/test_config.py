"""Settings, defaults and their validation: one source, read by the library, the help and README."""

import re
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import typer

from charlstm.cli import app
from charlstm.config import (
    FLAGS,
    NOT_OPTIONS,
    InspectConfig,
    ModelConfig,
    TrainConfig,
    default_text,
    flag,
    format_duration,
    parse_duration,
)
from charlstm.errors import SettingError


def test_the_config_module_does_not_import_torch():
    code = "import sys, charlstm.config\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_setting_is_an_option_or_says_it_is_none():
    for config in (TrainConfig, ModelConfig, InspectConfig):
        for f in fields(config):
            assert (f.name in FLAGS) != (f.name in NOT_OPTIONS), f.name


def test_a_setting_no_option_sets_is_named_as_a_setting_not_as_a_flag():
    """ModelConfig used to say '--vocab_size must be at least 1': there is no such flag. Python
    reads the keyword; the command line's spelling says plainly that no option sets it."""
    with pytest.raises(SettingError) as error:
        ModelConfig(vocab_size=0)
    assert str(error.value) == "vocab_size must be at least 1, got 0"
    spelled = error.value.spelled(flag)
    assert spelled.startswith("vocab_size (") and "no option sets it" in spelled
    assert flag("batch_size") == "--batch-size" and flag("vocab_size") == NOT_OPTIONS["vocab_size"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
        ({"val_frac": 1.0}, "val_frac must be in [0, 1), got 1.0"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        ({"precision": "fp16"}, "precision must be auto, fp32 or bf16, got 'fp16'"),
        ({"batching": "shuffled"}, "batching must be stream or random, got 'shuffled'"),
        ({"lr": float("inf")}, "lr must be a positive number, got inf"),
    ],
)
def test_bad_training_settings_are_named_by_keyword_and_spelled_as_options(settings, message):
    """Python callers read the keyword; the command line spells the same error with the flag."""
    with pytest.raises(SettingError) as error:
        TrainConfig(**settings)
    name = next(iter(settings))
    assert str(error.value) == message and error.value.name == name
    assert error.value.spelled(flag) == message.replace(name, flag(name), 1)


def test_a_value_that_looks_like_a_setting_name_is_not_spelled():
    """The text names settings with a mark no typed value holds; a '{top_k}' the user typed
    stays '{top_k}' however the reader spells names (a flag, a request's field)."""
    with pytest.raises(SettingError) as error:
        TrainConfig(device="{top_k}")
    assert str(error.value) == "device must be auto, cpu, cuda, cuda:N or mps, got '{top_k}'"
    assert error.value.spelled(str.upper) == "DEVICE must be auto, cpu, cuda, cuda:N or mps, got '{top_k}'"


def test_cuda_with_an_index_is_a_device_name():
    assert TrainConfig(device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("seconds", [0, 45, 90, 300, 600, 5400, 86400, 1.5])
def test_a_formatted_duration_reads_back_as_itself(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_defaults_are_written_as_a_person_types_them():
    assert default_text(TrainConfig, "max_time") == "5m"
    assert default_text(TrainConfig, "lr") == "0.012"
    assert default_text(ModelConfig, "dropout") == "0"
    assert default_text(InspectConfig, "gate") == "cell"
    with pytest.raises(ValueError, match="no default"):
        default_text(ModelConfig, "vocab_size")


def test_inspect_settings_are_checked():
    with pytest.raises(SettingError, match="^length must be at least 1"):
        InspectConfig(length=0)
    with pytest.raises(SettingError, match="^show must be >= 0"):
        InspectConfig(show=-1)


README = Path(__file__).resolve().parents[1] / "README.md"


def _train_table() -> list[list[str]]:
    """The rows of README's option table for `charlstm train` (the table that lists --max-time)."""
    tables, current = [], []
    for line in [*README.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    (table,) = [t for t in tables if any(row[0].startswith("`--max-time`") for row in t)]
    assert table[0][:2] == ["option", "default"], table[0]
    return table[2:]


def _items(cell: str) -> list[str]:
    """A table cell split at its top-level commas: '`2`, sized (`256` with x), `64`' -> 3 items."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(cell):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(cell[start:i].strip())
            start = i + 1
    return [*items, cell[start:].strip()]


def test_readme_train_table_lists_every_option_with_its_real_default():
    """README's table is the third place train's defaults appear (after config.py and the
    help rendered from it); this holds it to config.py and to the options that exist."""
    command = typer.main.get_command(app).commands["train"]
    options = {o for p in command.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    named = {o for p in command.params if p.param_type_name == "option" for o in p.opts[:1] if o != "--help"}
    settings = {option: name for name, option in FLAGS.items()}
    defaults = asdict(TrainConfig()) | asdict(ModelConfig(vocab_size=1))
    listed = set()
    for row in _train_table():
        flags = [re.match(r"`(-[-\w]+)", item).group(1) for item in _items(row[0])]
        values = _items(row[1])
        assert len(values) in (1, len(flags)), row
        for option, value in zip(flags, values if len(values) == len(flags) else values * len(flags), strict=True):
            assert option in options, f"README lists {option}, which charlstm train does not have"
            listed |= {option, option.replace("--no-", "--")}
            name = settings.get(option)
            if name not in defaults:
                continue
            written = re.search(r"`([^`]+)`", value)
            assert written, f"README states no default for {option}"
            default = defaults[name]
            if name == "max_time":
                assert parse_duration(written.group(1)) == default, option
            elif isinstance(default, str):
                assert written.group(1) == default, option
            else:
                assert float(written.group(1)) == default, option
    assert named <= listed, f"README's train table lacks {sorted(named - listed)}"
