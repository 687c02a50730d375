"""A CPU whose PyTorch cannot compute the LSTM in bf16 (oneDNN on an AVX2-only CPU has no bf16
LSTM primitive): every place that can ask for a bf16 kernel says so in one line or picks fp32.

The missing kernel is faked (nn.LSTM refuses under bf16 autocast, with oneDNN's own words), so
these run on every CPU, whatever kernels it really has.
"""

import pytest
import torch

from charlstm import device
from charlstm.budget import confirm_auto_precision
from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import load_data
from charlstm.device import bf16_kernels_run, native_bf16, resolve_precision
from charlstm.errors import CharlstmError
from charlstm.runs import place
from tests.helpers import TINY_MODEL, invoke, train_args
from tests.test_device import CPU, fake_cpu

ONEDNN_REFUSAL = "could not create a primitive descriptor for the LSTM forward propagation primitive"


@pytest.fixture
def no_bf16_lstm_kernel(monkeypatch):
    """This CPU as an AVX2-only one is: oneDNN builds no bf16 LSTM primitive, so nn.LSTM under
    bf16 autocast raises (the GRU and the plain RNN still run). Whatever the real CPU has."""
    forward = torch.nn.LSTM.forward

    def refusing(self, *args, **kwargs):
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            raise RuntimeError(ONEDNN_REFUSAL)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.LSTM, "forward", refusing)
    device._bf16_step_runs.cache_clear()
    yield
    device._bf16_step_runs.cache_clear()


def test_bf16_asked_for_without_the_kernel_is_one_line_naming_what_to_use(no_bf16_lstm_kernel):
    assert not bf16_kernels_run(CPU, "lstm")
    assert bf16_kernels_run(CPU, "gru"), "only the missing kernel counts against bf16"
    with pytest.raises(CharlstmError, match=r"^precision bf16: this CPU has no bf16 kernel for the lstm recurrence"):
        resolve_precision("bf16", CPU, "lstm")
    assert resolve_precision("bf16", CPU, "gru") == "bf16"


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True)], ids=["avx512-bf16", "amx"])
def test_auto_is_fp32_where_the_flags_say_bf16_but_no_kernel_runs(monkeypatch, no_bf16_lstm_kernel, avx512_bf16, amx):
    fake_cpu(monkeypatch, avx512_bf16, amx, onednn_bf16=True)
    assert native_bf16(CPU), "the flags say native"
    assert resolve_precision("auto", CPU, "lstm") == "fp32"
    assert resolve_precision("auto", CPU, "gru") == "bf16"


def test_the_kernel_probe_asks_once_per_cell(monkeypatch):
    calls = []
    forward = torch.nn.GRU.forward
    monkeypatch.setattr(torch.nn.GRU, "forward", lambda self, *a: calls.append(1) or forward(self, *a))
    device._bf16_step_runs.cache_clear()
    try:
        assert bf16_kernels_run(CPU, "gru") == bf16_kernels_run(CPU, "gru")
    finally:
        device._bf16_step_runs.cache_clear()
    assert len(calls) == 1
    assert bf16_kernels_run(torch.device("cuda:0"), "lstm"), "off the CPU, prepare_model decides the recurrence"


@pytest.mark.parametrize(
    "command",
    [
        ["train", "{corpus}", "--max-steps", "3", "--max-time", "0", "--checkpoints", "{root}", *TINY_MODEL],
        ["eval", "{corpus}", "--checkpoint", "{run}"],
    ],
    ids=["train", "eval"],
)
def test_the_commands_refuse_bf16_without_the_kernel_in_one_line(
    capsys, tmp_path, small_corpus, trained_run, no_bf16_lstm_kernel, command
):
    args = [a.format(corpus=small_corpus, root=tmp_path / "runs", run=trained_run) for a in command]
    code, _, err = invoke(capsys, *args, "--precision", "bf16")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--precision bf16: this CPU has no bf16 kernel for the lstm recurrence" in err
    assert "--precision fp32" in err


def test_inspect_gates_and_a_gru_run_keep_working_without_the_lstm_kernel(
    capsys, tmp_path, small_corpus, trained_run, no_bf16_lstm_kernel
):
    """inspect-gates steps the explicit cells (no fused kernel, no autocast); a GRU's bf16 kernels
    are not the LSTM's, so its run goes on in bf16."""
    code, out, _ = invoke(capsys, "inspect-gates", "--checkpoint", str(trained_run), "--text", "The cat sat.")
    assert code == 0 and out
    root = tmp_path / "gru"
    args = train_args(small_corpus, root, "--cell", "gru", "--precision", "bf16", steps=2)
    code, _, err = invoke(capsys, *args)
    assert code == 0, err
    assert "bf16" in err


def test_budget_precision_auto_never_times_bf16_without_the_kernel(monkeypatch, small_corpus, no_bf16_lstm_kernel):
    """The CPU's flags say native bf16 (AVX512-BF16), but the kernel does not run: auto is fp32
    untimed, with the reason said."""
    fake_cpu(monkeypatch, avx512_bf16=True, amx=False, onednn_bf16=True)
    config = TrainConfig(corpus=str(small_corpus), batch_size=4, seq_len=16, precision="auto", device="cpu")
    data = load_data(config)
    model = ModelConfig(len(data.vocabulary), hidden=16, embedding=8)
    timed = []
    measure = lambda trainer: timed.append(1) or 1.0  # noqa: E731
    confirmed, choice = confirm_auto_precision(model, config, data, place(config), measure)
    assert (confirmed.precision, choice.chosen, timed) == ("fp32", "fp32", [])
    assert choice.reason == "no native bf16 on this cpu"
