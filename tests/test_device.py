"""Device and precision: `--precision auto` picks bf16 only where the hardware computes it.

The detection is faked both ways (native, emulated, none), so these run on any machine.
"""

import pytest
import torch

from charlstm.device import native_bf16, resolve_precision
from charlstm.errors import CharlstmError

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, avx512_bf16: bool, amx: bool, onednn_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    # oneDNN says yes on any AVX-512 CPU, where it emulates bf16 (0.4x the speed of fp32)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "onednn_bf16", "chosen"),
    [
        (True, False, True, "bf16"),  # native: AVX512-BF16
        (False, True, True, "bf16"),  # native: AMX
        (False, False, True, "fp32"),  # emulated: AVX-512 without either (many cloud Xeons)
        (False, False, False, "fp32"),  # none
    ],
    ids=["avx512-bf16", "amx", "emulated", "none"],
)
def test_auto_precision_on_the_cpu_counts_only_native_bf16(monkeypatch, avx512_bf16, amx, onednn_bf16, chosen):
    """The emulated case picked bf16 before, and trained at 0.39-0.45x the speed of fp32."""
    fake_cpu(monkeypatch, avx512_bf16, amx, onednn_bf16)
    assert resolve_precision("auto", CPU) == chosen
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16", "asked for, kept"


def test_a_pytorch_without_the_instruction_probes_says_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert not native_bf16(CPU)
    assert resolve_precision("auto", CPU) == "fp32"


def fake_gpus(monkeypatch, capabilities: dict[int, tuple[int, int]], current: int = 0) -> None:
    def capability(device=None):
        index = device.index if isinstance(device, torch.device) else device
        return capabilities[current if index is None else index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: capabilities[current] >= (8, 0))


def test_auto_precision_on_cuda_asks_the_gpu_the_run_uses(monkeypatch):
    """GPU 0 a V100 (7.0), GPU 1 an A100 (8.0): `--device cuda:1` gets bf16 although the
    current GPU has none; before, the current GPU's answer was used for every GPU."""
    fake_gpus(monkeypatch, {0: (7, 0), 1: (8, 0)})
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32", "plain cuda is the current GPU"
    fake_gpus(monkeypatch, {0: (9, 0), 1: (7, 5)})
    assert resolve_precision("auto", torch.device("cuda:1")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


def test_other_devices_never_pick_bf16_and_refuse_it_on_mps():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(CharlstmError, match="--precision bf16 is not supported on MPS"):
        resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(CharlstmError, match="--precision must be auto, fp32 or bf16, got 'fp16'"):
        resolve_precision("fp16", CPU)
