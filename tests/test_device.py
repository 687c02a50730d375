"""Device and precision: `--precision auto` picks bf16 only where the hardware computes it.

The detection is faked both ways (native, emulated, none), so these run on any machine.
"""

import pytest
import torch

from charlstm.device import (
    autocast,
    batch_to_device,
    bf16_kernels_run,
    describe_precision,
    native_bf16,
    prepare_model,
    recurrence_outside_autocast,
    resolve_device,
    resolve_precision,
)
from charlstm.distributed import Ranks
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
    with pytest.raises(CharlstmError, match="^precision bf16 is not supported on MPS"):
        resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(CharlstmError, match="^precision must be auto, fp32 or bf16, got 'fp16'"):
        resolve_precision("fp16", CPU)


def fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_precision_on_cuda_counts_compute_capability_not_emulation(monkeypatch):
    """torch.cuda.is_bf16_supported() says yes on a V100 or T4 (emulated); 7.x must still be fp32."""
    fake_gpus(monkeypatch, {0: (7, 0)})
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp32"
    fake_gpus(monkeypatch, {0: (8, 0)})
    assert resolve_precision("auto", torch.device("cuda:0")) == "bf16"


def test_a_gpu_this_process_cannot_see_is_one_clear_line(monkeypatch):
    """--device cuda:7 on a one-GPU machine failed later with CUDA's 'invalid device ordinal'."""
    fake_cuda(monkeypatch, 1)
    with pytest.raises(CharlstmError, match=r"^device cuda:7 asks for GPU 7, but this process sees 1 GPU \(cuda:0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    fake_cuda(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(CharlstmError, match=r"sees 2 GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_each_torchrun_rank_computes_on_its_local_gpu_and_refuses_one_it_cannot_have(monkeypatch):
    fake_cuda(monkeypatch, 2)
    assert Ranks().place(torch.device("cuda:1")) == torch.device("cuda:1"), "one process: the GPU asked for"
    assert Ranks(3, 4, 1).place(torch.device("cuda")) == torch.device("cuda:1")
    assert Ranks(1, 2, 1).place(torch.device("cuda:1")) == torch.device("cuda:1")
    assert Ranks(1, 2, 1).place(CPU) == CPU
    with pytest.raises(CharlstmError, match="^device cuda:1 cannot be used under torchrun"):
        Ranks(0, 2, 0).place(torch.device("cuda:1"))  # before, the model went to GPU 1 and DDP was told GPU 0
    with pytest.raises(CharlstmError, match="torchrun started process 2 on this machine, but it sees 2 GPU"):
        Ranks(2, 3, 2).place(torch.device("cuda"))


def test_ddp_is_given_the_gpu_the_model_is_on(monkeypatch, small_corpus, tmp_path):
    """Trainer under a faked 2-rank CUDA launch: DDP's device_ids equal the model's device."""
    import charlstm.trainer as train
    from charlstm.config import ModelConfig, TrainConfig
    from charlstm.data import load_data

    fake_cuda(monkeypatch, 2)
    fake_gpus(monkeypatch, {0: (8, 0), 1: (8, 0)})
    seen = {}
    monkeypatch.setattr(train, "prepare_model", lambda model, device: seen.setdefault("model", device) and model)

    def ddp(model, device_ids):
        seen["ddp"] = device_ids
        raise _Stop

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", ddp)
    data = load_data(TrainConfig(corpus=str(small_corpus)))
    config = TrainConfig(corpus=str(small_corpus), device="cuda", precision="fp32", batch_size=4)
    ranks = Ranks(1, 2, 1)
    placement = train.Placement(ranks.place(torch.device("cuda")), "fp32", ranks)
    with pytest.raises(_Stop):
        train.Trainer(ModelConfig(len(data.vocabulary), hidden=8, embedding=4), config, data, tmp_path, placement)
    assert seen == {"model": torch.device("cuda:1"), "ddp": [1]}


class _Stop(Exception):
    pass


@pytest.mark.skipif(
    not bf16_kernels_run(CPU), reason="this CPU's PyTorch has no bf16 LSTM kernel (oneDNN on AVX2-only CPUs)"
)
def test_under_bf16_autocast_the_recurrence_computes_in_fp32_when_told():
    """On CUDA, autocast would run cuDNN's RNN in fp16 (AutocastRNN.cpp casts to kHalf whatever
    dtype autocast has); the CUDA policy takes the recurrence out of autocast. Shown on the CPU,
    where autocast runs the LSTM in bf16 unless the module leaves it."""
    lstm = torch.nn.LSTM(4, 8, 2, batch_first=True)
    x = torch.randn(2, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lstm(x)[0].dtype == torch.bfloat16, "the CPU's own policy: bf16"
    recurrence_outside_autocast(lstm, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = lstm(x.bfloat16(), (torch.zeros(2, 2, 8).bfloat16(), torch.zeros(2, 2, 8)))
        assert torch.is_autocast_enabled("cpu"), "autocast is back on after the recurrence"
    assert out.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(lstm(x)[0], torch.nn.LSTM.forward(lstm, x)[0])
    assert list(dict(lstm.named_parameters())) == list(dict(torch.nn.LSTM(4, 8, 2).named_parameters()))


def test_prepare_model_takes_the_recurrence_out_of_autocast_on_cuda_only(monkeypatch):
    from charlstm.config import ModelConfig
    from charlstm.model import CharLSTM

    on_cpu = prepare_model(CharLSTM(ModelConfig(10, hidden=8, embedding=4)), CPU)
    assert "forward" not in vars(on_cpu.recurrent), "the CPU keeps oneDNN's bf16 LSTM: results unchanged"
    model = CharLSTM(ModelConfig(10, hidden=8, embedding=4))
    monkeypatch.setattr(model, "to", lambda device: model)  # no GPU here: stay put, as if moved
    prepare_model(model, torch.device("cuda:0"))
    assert vars(model.recurrent)["_charlstm_fp32_on"] == "cuda"


def test_the_precision_shown_says_what_the_recurrence_runs_in(monkeypatch):
    fake_gpus(monkeypatch, {0: (8, 0), 1: (7, 0)})
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert describe_precision(torch.device("cuda:0"), "bf16") == "bf16 (recurrence tf32)"
    assert describe_precision(torch.device("cuda:0"), "fp32") == "fp32 (recurrence tf32)"
    assert describe_precision(torch.device("cuda:1"), "bf16") == "bf16 (recurrence fp32)"
    assert describe_precision(torch.device("cuda:1"), "fp32") == "fp32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert describe_precision(torch.device("cuda:0"), "fp32") == "fp32"
    assert describe_precision(CPU, "bf16") == "bf16" and describe_precision(CPU, "fp32") == "fp32"


def test_on_cuda_dropout_is_seeded_once_a_run_not_every_step(monkeypatch, small_corpus, tmp_path):
    """Reseeding every step made cuDNN rebuild its dropout state every step; the CPU keeps
    per-step seeds (exact resume)."""
    import charlstm.trainer as train
    from charlstm.config import ModelConfig, TrainConfig
    from charlstm.data import load_data
    from charlstm.runs import place

    seeds = []
    monkeypatch.setattr(train, "seed_device", lambda device, seed: seeds.append(seed))
    config = TrainConfig(corpus=str(small_corpus), device="cpu", batch_size=4, seq_len=8, max_time=0, max_steps=3)
    data = load_data(config)
    model = ModelConfig(len(data.vocabulary), hidden=8, embedding=4, dropout=0.1)
    trainer = train.Trainer(model, config, data, tmp_path, place(config))
    for _ in range(3):
        trainer.train_step()
    assert len(seeds) == 3
    monkeypatch.setattr(train, "seeds_per_step", lambda device: False)
    seeds.clear()
    trainer = train.Trainer(model, config, data, tmp_path, place(config))
    for _ in range(3):
        trainer.train_step()
    assert seeds == [config.seed * 1_000_003]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_bf16_training_runs_the_recurrence_in_fp32_and_tracks_fp32():
    from charlstm.config import ModelConfig
    from charlstm.model import CharLSTM

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = prepare_model(CharLSTM(ModelConfig(40, hidden=64, embedding=16)), device)
    ids = torch.randint(0, 40, (4, 32), device=device)
    seen = []
    model.recurrent.register_forward_hook(lambda module, args, out: seen.append(out[0].dtype))
    with autocast(device, "bf16"):
        logits_bf16, _ = model(ids)
    logits_fp32, _ = model(ids)
    assert seen == [torch.float32, torch.float32]
    torch.testing.assert_close(logits_bf16.float(), logits_fp32, atol=0.05, rtol=0.05)  # bf16 decoder


@needs_cuda
def test_cuda_batches_arrive_as_the_cpu_sees_them():
    tokens = torch.randint(0, 200, (2, 8, 16), dtype=torch.uint8)
    inputs, targets = batch_to_device(tokens[0], tokens[1], torch.device("cuda"))
    assert inputs.dtype == targets.dtype == torch.long
    assert torch.equal(inputs.cpu(), tokens[0].long()) and torch.equal(targets.cpu(), tokens[1].long())


@needs_cuda
def test_cuda_and_cpu_score_a_model_alike():
    """Within what TF32 allows (cuDNN's RNN uses it on Ampere+ unless allow_tf32 is off)."""
    from charlstm.config import ModelConfig
    from charlstm.evaluation import evaluate_tokens
    from charlstm.model import CharLSTM

    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(30, hidden=64, embedding=16))
    tokens = torch.randint(0, 30, (20_000,), dtype=torch.uint8)
    on_cpu = evaluate_tokens(model, tokens, "cpu", "fp32")["loss"]
    on_gpu = evaluate_tokens(model, tokens, "cuda", "fp32")["loss"]
    assert on_gpu == pytest.approx(on_cpu, rel=2e-3)
