"""DDP set-up from torchrun's environment and the few collective decisions the loop needs.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR/PORT); without them the run is a single process and
every helper here degrades to a no-op, so the loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun described (NCCL on CUDA, gloo on CPU); single process otherwise."""
    if not launched_by_torchrun():
        return DistContext()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        # A generous timeout: rank 0 validates and checkpoints while the others wait at a barrier.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_true(flag: torch.Tensor, ctx: DistContext) -> bool:
    """True only if ``flag`` (a 0-dim bool/int tensor) is true on every rank: one shared verdict."""
    value = flag.to(torch.int32).reshape(1)
    if ctx.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_ddp(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several ranks, ``module`` itself otherwise."""
    if not ctx.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
