"""Parallelism, compile and full-state gathering, applied from outside the model.

This is the only module that imports torch.distributed. Under `torchrun` (WORLD_SIZE > 1) it starts a process
group (nccl on CUDA, gloo on CPU) and wraps the model in DDP or FSDP2 (`fully_shard` on each block, then the
root). Order, as torchtitan: compile each block, then shard/replicate. Model and optimizer state are always
saved and loaded as *full* (unsharded) state dicts, so a checkpoint does not depend on the world size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's environment; start the process group when there is more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: nn.Module, ctx: DistContext, *, strategy: str, compile: bool) -> nn.Module:
    """The module to train: `model` itself, or wrapped by DDP / sharded in place by FSDP2."""
    if compile:
        for block in model.layers:  # regional compilation: every block shares one compiled graph
            block.compile()
    if not ctx.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimizer state dicts on the CPU, keyed by parameter name (collective under FSDP)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(unwrap(model), optimizer, options=options)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optim_state: dict[str, Any] | None) -> None:
    """Load full state dicts; `optim_state` None keeps the optimizer fresh (an upcycled run's first start)."""
    options = StateDictOptions(full_state_dict=True, strict=True)
    if optim_state is None:
        set_model_state_dict(unwrap(model), model_state, options=options)
        return
    set_state_dict(unwrap(model), optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=options)


def mean_across_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if ctx.device.type == "cuda" else dist.ReduceOp.SUM)
        if ctx.device.type != "cuda":  # gloo has no AVG
            value /= ctx.world_size
    return value


def sum_across_ranks_(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """Sum each tensor over all ranks, in place (nothing to do on one process)."""
    if ctx.distributed:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is True on any: ranks agree (a collective when distributed)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor(int(flag), device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the body first (e.g. preparing the data cache), then the others."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (FSDP2 grad norms are DTensors), or t itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
