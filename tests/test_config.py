"""Settings, defaults and their validation: one source, read by the library, the help and README."""

import subprocess
import sys
from dataclasses import fields

import pytest

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
from charlstm.errors import CharlstmError


def test_the_config_module_does_not_import_torch():
    code = "import sys, charlstm.config\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_setting_is_an_option_or_says_it_is_none():
    for config in (TrainConfig, ModelConfig, InspectConfig):
        for f in fields(config):
            assert (f.name in FLAGS) != (f.name in NOT_OPTIONS), f.name


def test_a_setting_no_option_sets_is_named_as_a_setting_not_as_a_flag():
    """ModelConfig used to say '--vocab_size must be at least 1': there is no such flag."""
    with pytest.raises(CharlstmError) as error:
        ModelConfig(vocab_size=0)
    assert "--vocab" not in str(error.value)
    assert str(error.value).startswith("vocab_size (") and "no option sets it" in str(error.value)
    assert flag("batch_size") == "--batch-size" and flag("vocab_size") == NOT_OPTIONS["vocab_size"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"warmup_steps": -1}, "--warmup-steps must be >= 0, got -1"),
        ({"val_frac": 1.0}, "--val-frac must be in [0, 1), got 1.0"),
        ({"device": "tpu"}, "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        ({"precision": "fp16"}, "--precision must be auto, fp32 or bf16, got 'fp16'"),
        ({"batching": "shuffled"}, "--batching must be stream or random, got 'shuffled'"),
        ({"lr": float("inf")}, "--lr must be a positive number, got inf"),
    ],
)
def test_bad_training_settings_are_named_by_their_option(settings, message):
    with pytest.raises(CharlstmError) as error:
        TrainConfig(**settings)
    assert str(error.value) == message


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
    with pytest.raises(CharlstmError, match="--length must be at least 1"):
        InspectConfig(length=0)
    with pytest.raises(CharlstmError, match="--show must be >= 0"):
        InspectConfig(show=-1)
