"""Multi-process training under ``torchrun``: process-group setup and gradient averaging.

Why gradients are averaged here rather than by wrapping the model in DistributedDataParallel:
local-learning methods run several backward passes per step (one per module), which DDP's
reducer does not support. Averaging the gradients once after all backward passes gives every
method, E2E included, the same update DDP would give, with one code path. The cost is that the
all-reduce does not overlap the backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device for ``--device`` (auto | cpu | mps | cuda | cuda:N); ConfigError when it is not usable here.

    ``auto`` is CUDA when available, else CPU. A bare ``cuda`` means GPU ``local_rank`` under torchrun,
    else the current GPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu, mps, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: PyTorch sees no CUDA GPU on this machine; use --device cpu "
                              "(or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu (or auto)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: leanvision runs on auto, cpu, mps, cuda or cuda:N")
    return dev


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); pick the device.

    ``device="auto"`` means CUDA (one GPU per process, by ``LOCAL_RANK``) when available, else CPU.
    The backend is NCCL on CUDA and Gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local if world > 1 else None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), dev


def is_main_process() -> bool:
    """True in a single process and on rank 0 under torchrun: the process that reports."""
    return int(os.environ.get("RANK", "0")) == 0


def _enabled() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def broadcast_values(values: list[float], device: torch.device, src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank (float64; unchanged in a single process).

    Decisions that only rank ``src`` can take (it alone evaluates) are broadcast this way, so that every
    rank stops, continues and saves in step.
    """
    if not _enabled():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src)
    return t.tolist()


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank (``flag`` itself in a single process)."""
    if not _enabled():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s parameters and buffers."""
    if _enabled():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def average_gradients(params, bucket_bytes: int = 25 << 20, group=None) -> None:
    """All-reduce and average ``.grad`` of ``params`` across ranks (of ``group``), in flat buckets (as DDP does)."""
    if not _enabled():
        return
    world = dist.get_world_size(group)
    grads = [p.grad for p in params if p.grad is not None]
    bucket, size = [], 0
    for g in grads + [None]:
        if g is not None:
            bucket.append(g)
            size += g.numel() * g.element_size()
        if bucket and (g is None or size >= bucket_bytes):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat, group=group)
            flat.div_(world)
            for dst, src in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                dst.copy_(src)
            bucket, size = [], 0


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
