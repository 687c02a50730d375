"""Data-parallel training across processes, on PyTorch's own engine (torchrun + DDP).

torchrun starts one process per GPU (or per CPU share) and tells each its rank through
the environment. A run with no such environment is one process and every helper here
is a no-op, so the trainer has a single code path. `--batch-size` stays the global
batch: each rank trains its own slice of the streams, and DDP averages gradients, so a
two-process run follows the one-process run with the same batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charlstm.errors import CharlstmError, SettingError, named


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints and logs and reports progress."""
        return self.rank == 0

    @property
    def node_main(self) -> bool:
        """Local rank 0 builds what each machine keeps on its own disk (the token cache)."""
        return self.local_rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device this rank computes on: `device` in a one-process run; under torchrun on
        CUDA, GPU `local_rank` of those this process sees (torchrun's one GPU per process).
        DDP's device_ids are this device, so model and DDP never disagree."""
        if self.world == 1 or device.type != "cuda":
            return device
        if device.index is not None and device.index != self.local_rank:
            raise SettingError(
                "device",
                f"{named('device')} {device} cannot be used under torchrun, where process {self.local_rank} of each "
                f"machine uses GPU {self.local_rank}; ask for {named('device')} cuda and pick GPUs with "
                "CUDA_VISIBLE_DEVICES",
                usage=False,
            )
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise CharlstmError(
                f"torchrun started process {self.local_rank} on this machine, but it sees {count} GPU(s); "
                f"use --nproc_per_node {count} or fewer"
            )
        return torch.device("cuda", self.local_rank)

    def rows(self, batch_size: int) -> slice:
        """This rank's streams of a global batch."""
        share = batch_size // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise SettingError(
                "batch_size",
                f"{batch_size} must divide evenly among {self.world} processes; use a multiple of {self.world}",
                usage=False,
            )

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree(self, *values: float) -> list[float]:
        """The largest of each value across ranks (elapsed time, a stop request), so that
        every rank takes the same schedule and stops at the same step."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def any(self, flag_: bool, device: torch.device | None = None) -> bool:
        """Whether any rank's `flag_` is set: every rank must call it, so a rank that finds
        something wrong (a non-finite state) stops with the others instead of leaving
        them waiting in a collective it will never join."""
        if self.world == 1:
            return flag_
        tensor = torch.tensor([float(flag_)], device=device or self.collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def gather_rows(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's slice of a batch-shaped tensor, joined back in rank order."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def share(self, value: object) -> object:
        """Rank 0's value of a small Python object (a run folder's path), on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def ranks(device: torch.device) -> Ranks:
    """This process's place in a torchrun launch, joining the process group on first call.

    NCCL on CUDA, gloo on the CPU; torchrun's MASTER_ADDR/PORT (or its rendezvous) say
    where to meet, so multi-node runs take torchrun's usual arguments.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(Ranks(0, world, local_rank).place(device))
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except (RuntimeError, ValueError) as e:
            raise CharlstmError(f"cannot join the torchrun process group: {e}") from e
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
