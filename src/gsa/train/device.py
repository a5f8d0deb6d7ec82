"""Which device a run uses: ``--device`` names resolved and checked against this machine."""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from .distributed import DistInfo

__all__ = ["resolve_device"]


def resolve_device(name: str, dist: Optional[DistInfo] = None) -> torch.device:
    """``auto`` -> CUDA if available, else Apple's MPS if available (not for a distributed job:
    DDP has no MPS backend), else the CPU; with DDP on CUDA, ``cuda:LOCAL_RANK``.

    Raises :class:`~gsa.errors.ConfigError` for unknown names and for devices this
    machine or PyTorch build does not have.
    """
    name = (name or "auto").lower()
    if name == "auto":
        distributed = dist is not None and dist.enabled
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() and not distributed else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available in this PyTorch build/machine")
        if dist is not None and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type == "mps" and not _mps_available():
        raise ConfigError("--device mps: MPS is not available on this machine")
    return device


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
