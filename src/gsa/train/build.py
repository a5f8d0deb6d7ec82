"""Setting a run up: its directory, data and model."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import Subset

from ..errors import ConfigError, DataError
from . import checkpoint as ckpt
from . import distributed as D
from . import rundir
from .config import TrainConfig
from .hooks import DataSpec, Hooks
from .loaders import materialize

__all__ = ["SPLITS", "default_run_dir", "claim_run_dir", "load_data", "build_model", "to_device_if_small"]

SPLITS = ("train", "valid", "test")


def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<recipe>-<dataset>-<group>-<timestamp>`` (a name only: :func:`claim_run_dir` with a lock
    creates it, appending ``-2``, ``-3``, ... when a run started in the same second took it). Each
    part is made safe by :func:`~gsa.train.rundir.name_part`: ``folder:/a/b`` gives ``folder-b``
    (one directory, no ``:``)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parts = (rundir.name_part(str(p)) for p in (cfg.recipe, cfg.dataset, cfg.group))
    return Path("runs") / f"{'-'.join(parts)}-{stamp}"


def claim_run_dir(cfg: TrainConfig, resume: bool, dist: D.DistInfo, lock: Optional[rundir.RunLock] = None) -> Path:
    """The run directory (rank 0's choice): ``cfg.out`` or a new timestamped one.

    With ``lock`` (a new :class:`~gsa.train.rundir.RunLock`), rank 0 first creates the directory
    (a default name atomically, ``-2``, ``-3``, ... appended when taken) and locks it for the run;
    the checks below then see what no other run can change any more. Without ``lock`` nothing is
    created. Raises :class:`ConfigError` when the directory cannot be created or another run holds
    its lock, when resuming without a checkpoint there, when starting a new run where one already
    is, or where another run left its files.
    """
    if resume and not cfg.out:
        raise ConfigError("--resume needs the run directory")
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    run_dir = Path(D.broadcast_object(str(run_dir), dist))
    if lock is not None:
        run_dir = rundir.claim(run_dir, lock, fresh=not cfg.out, resume=resume, dist=dist)
    if resume:
        if not ckpt.has_last(run_dir):
            raise ConfigError(
                f"--resume {run_dir}: no checkpoint to resume from ({ckpt.MANIFEST} / {ckpt.STATE} / "
                f"{ckpt.LAST} missing)"
            )
    elif any((run_dir / name).exists() for name in (ckpt.MANIFEST, ckpt.STATE, ckpt.LAST)):
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    elif found := rundir.other_run_files(run_dir):
        raise ConfigError(
            f"{run_dir} holds another run's files ({', '.join(found)}) but no checkpoint to resume; "
            "choose another --out (or move those files away)"
        )
    return run_dir


def load_data(cfg: TrainConfig, hooks: Hooks, splits=SPLITS) -> tuple[DataSpec, dict[str, Any], dict[str, Any]]:
    """Dataset metadata, datasets and (when small enough) their stacked tensors."""
    spec = hooks.info_fn(cfg.dataset)
    datasets, tensors = {}, {}
    for split in splits:
        ds = hooks.dataset_fn(cfg, split)
        if len(ds) == 0:  # train learns, valid picks the best weights, test gives the final number
            raise DataError(f"dataset {cfg.dataset!r}: the {split} split has no images; every split needs some")
        if split == "train" and cfg.train_subset is not None and cfg.train_subset < len(ds):
            ds = Subset(ds, range(cfg.train_subset))
        datasets[split] = ds
        if cfg.loader == "dataloader":
            tensors[split] = None
        else:
            tensors[split] = materialize(ds, force=(cfg.loader == "tensor"))
            if tensors[split] is not None:
                check_label_range(tensors[split][1], spec, split)
    return spec, datasets, tensors


def check_label_range(labels: torch.Tensor, spec: DataSpec, split: str) -> None:
    """A :class:`DataError` when a label lies outside ``0 .. spec.num_classes - 1`` (a dataset whose info
    and labels disagree), instead of an index error in the middle of training."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= spec.num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"dataset {spec.name!r}: the {split} split has label {bad}, outside the "
            f"{spec.num_classes} classes 0..{spec.num_classes - 1} of its description"
        )


def build_model(cfg: TrainConfig, spec: DataSpec, hooks: Hooks, device: torch.device) -> nn.Module:
    """The model from ``hooks.model_fn``, on ``device``; a :class:`ConfigError` if it is not a module."""
    model = hooks.model_fn(cfg, spec)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory returned {type(model).__name__}, not an nn.Module")
    return model.to(device)


def to_device_if_small(pair: Any, device: torch.device, max_bytes: int = 2 << 30) -> Any:
    """A split's ``(images, labels)`` tensors moved to ``device`` when the images take at most
    ``max_bytes`` (else, or for ``None``, unchanged)."""
    if pair is None:
        return None
    x, y = pair
    if x.numel() * x.element_size() > max_bytes:
        return pair
    return x.to(device), y.to(device)
