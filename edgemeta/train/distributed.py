"""torch.distributed for meta-training: launched by ``torchrun``, gradients averaged across ranks.

Each rank runs its own episodes (the sampler is indexed by ``step * world + rank``), computes its
gradient, and the gradients are all-reduced (mean) before every optimizer step, which is what
DistributedDataParallel does, written out so that it also covers the ``metasgd`` inner loop
(the head's inner steps are part of each rank's forward). Backend: nccl on GPUs, gloo on CPUs.
Only rank 0 validates, logs, checkpoints and exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device_type: str) -> Dist:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """All-reduce every gradient to its mean over ranks (one flat buffer, one collective)."""
    if not d.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= d.world
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def average_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Average floating buffers (BatchNorm running statistics) over ranks."""
    if not d.enabled:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= d.world


def broadcast_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    """Rank 0's decision (e.g. early stop), shared with every rank."""
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
