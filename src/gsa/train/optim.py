"""Optimizer and per-step LR scheduler of a run, built from its :class:`~gsa.train.config.TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig
from .schedule import LRSchedule

__all__ = ["build_optimizer", "build_scheduler", "make_schedule"]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (coupled L2 weight decay, as in the paper's code), AdamW or SGD with momentum.

    The update runs as PyTorch's fused kernel (``fused=True``: one kernel for all parameters) where
    this torch supports it for the parameters' device and dtype, else as the default implementation:
    the same update, several times cheaper than a loop over parameters for small networks (the ``mini``
    network's Adam step: about 1.5 instead of 11 ms on a CPU thread).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return _fused_if_supported(torch.optim.Adam, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return _fused_if_supported(torch.optim.AdamW, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        kw = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return _fused_if_supported(torch.optim.SGD, params, **kw)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}")


def _fused_if_supported(cls, params: list, **kw) -> torch.optim.Optimizer:
    """``cls(params, fused=True, **kw)``, or ``cls(params, **kw)`` where this torch has no fused kernel
    for these parameters (older releases, other devices or dtypes, no parameters)."""
    if params:
        try:
            return cls(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass
    return cls(params, **kw)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> LRSchedule:
    """The run's :class:`~gsa.train.schedule.LRSchedule`: ``warmup_epochs`` of linear warm-up, then
    constant, or a cosine that decays to 0 at ``epochs * steps_per_epoch`` optimizer steps."""
    if cfg.scheduler not in ("constant", "cosine"):
        raise ConfigError(f"unknown scheduler {cfg.scheduler!r}")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return LRSchedule(cfg.scheduler, cfg.epochs * steps_per_epoch, warmup)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR scheduler following :func:`make_schedule`.

    ``--max-steps`` only caps the run; it does not change the schedule, so a capped run
    resumed without the cap follows exactly the uninterrupted schedule.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(cfg, steps_per_epoch))
