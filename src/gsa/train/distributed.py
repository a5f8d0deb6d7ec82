"""DistributedDataParallel helpers: setup from ``torchrun`` env vars, rank checks, reductions.

With ``torchrun --nproc_per_node N -m gsa train ...`` each process reads ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment; the process group uses NCCL on
CUDA and gloo otherwise. Without those variables everything runs in one process and
the helpers below are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def setup(device_kind: str) -> DistInfo:
    """Initialise the default process group if launched by ``torchrun`` with WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_world_size())
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, local_rank, world, initialized_here=True)


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def per_process_batch(global_batch: int, world_size: int, what: str = "--batch-size") -> int:
    """Global batch / world size; error if it does not divide."""
    if global_batch % world_size:
        raise ConfigError(
            f"{what} {global_batch} is not divisible by the world size {world_size}; use a multiple of {world_size}"
        )
    return global_batch // world_size


def all_reduce_sum(values: Sequence[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (float64, exact for counts)."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_flags(flags: Sequence[bool], device: torch.device, info: DistInfo) -> list[bool]:
    """Logical OR of a few flags over all processes (one small all-reduce)."""
    if not info.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([1.0 if f else 0.0 for f in flags], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
