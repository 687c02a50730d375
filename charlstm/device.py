"""Where and in what precision a run computes: devices, bf16, seeding, the allocator.

Names are checked in `config` (no torch there); here they meet the machine: whether it
has the device asked for, whether that device computes bf16 natively, how to seed the
one generator dropout draws from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import AbstractContextManager, nullcontext

import torch

from charlstm.config import check_device_name, check_precision, flag
from charlstm.errors import CharlstmError


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
        raise CharlstmError(f"{flag('device')} cuda was asked for, but this machine has no usable CUDA GPU")
    if name == "mps" and not _mps_available():
        raise CharlstmError(f"{flag('device')} mps was asked for, but MPS is not available here")
    return torch.device(name)


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


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 autocast where the hardware has it natively, fp32 elsewhere."""
    check_precision(name)
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "bf16" and device.type == "mps":
        raise CharlstmError(f"{flag('precision')} bf16 is not supported on MPS; use fp32")
    return name


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for `bf16`, nothing for `fp32`."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


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
