"""Where and in what precision a run computes: devices, bf16, seeding, the allocator.

Names are checked in `config` (no torch there); here they meet the machine: whether it
has the device asked for, whether that device computes bf16 natively, how to seed the
one generator dropout draws from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import AbstractContextManager, nullcontext

import torch

from charlstm.config import check_device_name, check_precision
from charlstm.errors import SettingError, named


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA, else MPS, else the CPU; a device asked for by name must exist here."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError("device", "cuda was asked for, but this machine has no usable CUDA GPU", usage=False)
    if name.startswith("cuda:"):
        check_gpu_index(int(name.split(":")[1]), name)
    if name == "mps" and not _mps_available():
        raise SettingError("device", "mps was asked for, but MPS is not available here", usage=False)
    return torch.device(name)


def check_gpu_index(index: int, asked: str) -> None:
    """One clear line, not CUDA's "invalid device ordinal" later, for a GPU this process cannot
    see; `asked` is the device setting's value (`cuda:7`)."""
    count = torch.cuda.device_count()
    if index >= count:
        seen = "1 GPU (cuda:0)" if count == 1 else f"{count} GPUs (cuda:0 to cuda:{count - 1})"
        raise SettingError(
            "device", f"{asked} asks for GPU {index}, but this process sees {seen}; check CUDA_VISIBLE_DEVICES", False
        )


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware, so that autocast speeds it up, not down.

    CPU: the AVX512-BF16 or AMX instructions. oneDNN also calls bf16 "supported" on any
    AVX-512 CPU, where it emulates it: on such a Xeon, bf16 trained at 0.39-0.45x the
    chars/s of fp32 (benchmarks/training_speed.py --precision fp32 bf16), so emulation
    does not count. CUDA: compute capability 8.0 (Ampere) or later, of the device the run
    uses: with `cuda:1`, GPU 1's, whichever GPU is current.
    """
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8
    if device.type == "cpu":
        return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")
    return False


def _cpu_has(probe: str) -> bool:
    """torch.cpu's instruction-set probe `probe`; False where this PyTorch lacks it."""
    check = getattr(torch.cpu, probe, None)
    return bool(check()) if check is not None else False


def resolve_precision(name: str, device: torch.device, cell: str = "lstm") -> str:
    """`auto` is bf16 autocast where the hardware has it natively and `cell`'s kernels run
    in it, fp32 elsewhere; `bf16` asked for where they do not run is refused in one line."""
    check_precision(name)
    if name == "auto":
        return "bf16" if bf16_candidate(device, cell) else "fp32"
    if name == "bf16" and device.type == "mps":
        raise SettingError("precision", "bf16 is not supported on MPS; use fp32", usage=False)
    if name == "bf16" and not bf16_kernels_run(device, cell):
        raise SettingError(
            "precision",
            f"{named('precision')} bf16: this CPU has no bf16 kernel for the {cell} recurrence (PyTorch's oneDNN "
            f"could not build one here); use {named('precision')} fp32, or auto to take bf16 wherever it runs",
            usage=False,
        )
    return name


def bf16_candidate(device: torch.device, cell: str = "lstm") -> bool:
    """Whether bf16 may pay on `device` for a `cell` model: computed natively (not emulated)
    and its kernels run here. `--precision auto` takes it, or times it against fp32 (budget)."""
    return native_bf16(device) and bf16_kernels_run(device, cell)


def bf16_kernels_run(device: torch.device, cell: str = "lstm") -> bool:
    """Whether a `cell` model's training step runs under bf16 autocast on `device`: tried
    once per process on a tiny model, forward and backward, and remembered.

    The instruction set does not tell: oneDNN on an AVX2-only CPU has no bf16 LSTM
    primitive at all ("could not create a primitive descriptor for the LSTM forward
    propagation primitive"), and a build of PyTorch may lack kernels its CPU could run.
    Asking the library is the only answer that holds on every machine. Off the CPU the
    recurrence's precision is `prepare_model`'s business, so only the CPU is tried.
    """
    return device.type != "cpu" or _bf16_step_runs(cell)


@functools.cache
def _bf16_step_runs(cell: str) -> bool:
    from charlstm.cells import CELLS  # the cells import torch.nn; device is imported without them

    module = CELLS[cell].fused_module(input_size=4, hidden_size=4, num_layers=1, dropout=0.0)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(torch.randn(1, 2, 4, requires_grad=True))[0]
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for `bf16`, nothing for `fp32`.

    On CUDA a model must also pass through `prepare_model`: autocast's cuDNN RNN wrapper
    (aten/src/ATen/cudnn/AutocastRNN.cpp, the same from torch 2.2 on) casts the recurrence
    to fp16 whatever dtype autocast was given, with no loss scaling.
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` on `device`; on CUDA its recurrence computes in fp32 whatever autocast says.

    Under bf16 autocast, cuDNN's RNN would otherwise run in fp16 (see `autocast`), which
    is neither what `--precision bf16` says nor safe without a GradScaler. So on CUDA the
    recurrent kernel runs in fp32 (TF32 on compute capability 8.0+ while
    torch.backends.cudnn.allow_tf32 is on, PyTorch's default) and only the embedding,
    decoder and loss run in bf16; `describe_precision` says so. The CPU keeps oneDNN's
    bf16 LSTM, which is what it says, and its results stay as they were.
    """
    model = model.to(device)
    recurrent = getattr(model, "recurrent", None)
    if device.type == "cuda" and recurrent is not None:
        recurrence_outside_autocast(recurrent, "cuda")
    return model


def recurrence_outside_autocast(module: torch.nn.Module, device_type: str) -> None:
    """Make `module` (nn.LSTM/GRU/RNN) leave `device_type` autocast and compute in fp32.

    Set on the instance, not by wrapping it, so parameter names and checkpoints do not change.
    """
    if getattr(module, "_charlstm_fp32_on", None) == device_type:
        return
    forward = type(module).forward

    def fp32_forward(x: torch.Tensor, state=None):
        with torch.autocast(device_type, enabled=False):
            if state is not None:
                state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
            return forward(module, x.float(), state)

    module.forward = fp32_forward
    module._charlstm_fp32_on = device_type


def recurrence_dtype(device: torch.device, precision: str) -> str:
    """The dtype the recurrent kernel computes in for `precision` (resolved) on `device`."""
    if precision != "bf16" or device.type == "cuda":
        return "tf32" if device.type == "cuda" and _tf32_rnn(device) else "fp32"
    return "bf16"


def _tf32_rnn(device: torch.device) -> bool:
    """cuDNN computes fp32 RNNs in TF32 on Ampere and later while cudnn.allow_tf32 is on."""
    return bool(torch.backends.cudnn.allow_tf32) and torch.cuda.get_device_capability(device)[0] >= 8


def describe_precision(device: torch.device, precision: str) -> str:
    """What runs, as the banner and config.json say it: 'bf16' on the CPU; on CUDA
    'bf16 (recurrence tf32)' or 'fp32 (recurrence tf32)' where TF32 is at work."""
    inner = recurrence_dtype(device, precision)
    return precision if inner == precision else f"{precision} (recurrence {inner})"


def seeds_per_step(device: torch.device) -> bool:
    """Whether dropout is reseeded every step (from seed, step and rank) or once a run.

    On the CPU, per step: a resumed run draws the same masks with no generator state to
    carry, so resume is bit-exact. On CUDA, once: reseeding makes cuDNN rebuild its RNN
    dropout state (a sync and an init kernel) on the next step, and cuDNN's RNN backward is
    not deterministic anyway, so there is no exact resume to keep.
    """
    return device.type != "cuda"


def seed_device(device: torch.device, seed: int) -> None:
    """Seed the generator that dropout on `device` draws from, and no other.

    torch.manual_seed also seeds every other backend, queueing a lazy CUDA seeding with a
    captured stack trace when CUDA is not started: 220 µs a step on a CPU, against 2.
    """
    if device.type == "cuda":
        with torch.cuda.device(device):  # `--device cuda:1` trains on a GPU other than the current one
            torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory instead of returning it to the OS.

    Each training step frees and reallocates the same large activation buffers; by
    default glibc hands them back with munmap and takes them again with fresh, zeroed
    pages. Keeping them measured ~30% more chars/s for a 2x256 LSTM on the CPU here.
    Returns whether the setting took (False off glibc).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def batch_to_device(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's token ids as int64 on `device`.

    On CUDA both go through one pinned staging copy, so the host-to-device copy is one
    asynchronous transfer instead of two pageable ones from the memory-mapped cache (each
    a wait for the host); PyTorch's pinned-memory cache keeps a staging buffer until its
    copy is done. Elsewhere it is a plain conversion, as it always was.
    """
    if device.type != "cuda":
        return inputs.to(device, torch.long), targets.to(device, torch.long)
    both = torch.stack((inputs, targets)).pin_memory().to(device, non_blocking=True).long()
    return both[0], both[1]
