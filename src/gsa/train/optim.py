"""Optimizer and per-step LR scheduler of a run, built from its :class:`~gsa.train.config.TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from ..errors import ConfigError
from .schedule import LRSchedule

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (coupled L2 weight decay, as in the paper's code), AdamW or SGD with momentum."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule (:class:`~gsa.train.schedule.LRSchedule`): ``warmup_epochs`` of linear
    warm-up, then constant, or a cosine that decays to 0 at ``epochs * steps_per_epoch`` optimizer steps.

    ``--max-steps`` only caps the run; it does not change the schedule, so a capped run
    resumed without the cap follows exactly the uninterrupted schedule.
    """
    if cfg.scheduler not in ("constant", "cosine"):
        raise ConfigError(f"unknown scheduler {cfg.scheduler!r}")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(cfg.scheduler, cfg.epochs * steps_per_epoch, warmup))
