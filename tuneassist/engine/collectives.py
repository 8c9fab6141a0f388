"""The collectives the training loop uses on a multi-device run (see `tuneassist.engine.distributed`
for what such a run means). Each is a no-op with one process, so the loop calls them unconditionally."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under DDP (gradient all_reduce in buckets during backward)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # Buckets as the gradients' storage: no copy in or out of them, less memory.
    return DDP(model, device_ids=ids, gradient_as_bucket_view=True)


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise mean over ranks (identical on every rank afterwards)."""
    _, world = rank_world()
    if world > 1:
        dist.all_reduce(t)
        t.div_(world)
    return t


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (identical on every rank afterwards)."""
    if rank_world()[1] > 1:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: a decision all ranks act on at the same step."""
    if rank_world()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) everywhere, so every rank evaluates the same model."""
    if rank_world()[1] == 1:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)
