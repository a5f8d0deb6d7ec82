"""``gsa.train.train``: one training run, from config to ``report.json``.

Order of events: set up (DDP, seeds, data, model, optimizer) -> optionally resume from
``last.state.pt`` -> for each epoch: train, validate, keep the best-on-validation
weights, write ``metrics.csv`` / TensorBoard / ``last.*`` checkpoints -> evaluate the
test split once with the best weights -> rotation curve, invariance check,
``report.json`` and ``rotation.png``. The test split is never used for model selection.

The run itself is a :class:`~gsa.train.trainer.Trainer`; :func:`train` adds the
``torch.distributed`` setup and teardown around it.
"""

from __future__ import annotations

from typing import Any, Optional, TextIO

import torch

from . import distributed as D
from .build import build_model, default_run_dir, load_data
from .config import TrainConfig
from .device import resolve_device
from .hooks import Hooks, get_hooks
from .trainer import Trainer

__all__ = ["train", "Trainer", "build_model", "default_run_dir", "load_data"]


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    hooks: Optional[Hooks] = None,
    stream: Optional[TextIO] = None,
) -> dict[str, Any]:
    """Train according to ``cfg``; return the report (also written to ``<out>/report.json``).

    ``resume=True`` continues the run in ``cfg.out`` from ``last.state.pt``.
    Raises :class:`ConfigError`, :class:`CheckpointError`, :class:`NonFiniteLossError`
    or :class:`TrainingInterrupted` (after saving) on failure.
    """
    cfg.validate()
    hooks = hooks or get_hooks()
    device = resolve_device(cfg.device)
    dist = D.setup(device.type)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        report = Trainer(cfg, resume=resume, hooks=hooks, dist=dist, stream=stream).run()
        # rank 0 does extra work at the end (test set, report, plot); without this barrier the other
        # ranks tear gloo down under it and abort ("terminate called without an active exception").
        # Only on success: after an error a barrier could wait for a rank that is gone.
        D.barrier(dist)
        return report
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        D.teardown(dist)
