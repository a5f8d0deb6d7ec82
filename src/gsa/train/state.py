"""Where a run stands: :class:`Position` (saved in ``last.state.pt``), the :class:`Epoch` in progress,
and the metadata stored with the weights."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch import nn

from .checkpoint import unwrap
from .config import TrainConfig
from .hooks import input_stats
from .identity import identity_metadata
from .metrics import Meter
from .steps import usable_std

__all__ = ["Position", "Epoch", "weights_metadata", "pretrained_metadata"]


@dataclasses.dataclass
class Position:
    """Where training stands; saved as a dict under ``"position"`` in ``last.state.pt``
    (the field names are part of that file's format)."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches of ``epoch`` already done
    step: int = 0  # optimizer steps done (attempted; AMP-skipped ones included)
    best_acc: float = -1.0
    best_epoch: int = -1
    best_step: int = -1
    skipped_steps: int = 0
    train_seconds: float = 0.0
    train_images: float = 0.0
    epoch_seconds: list = dataclasses.field(default_factory=list)
    meter: dict = dataclasses.field(default_factory=dict)
    epoch_elapsed: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Position":
        """The position saved in a checkpoint (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclasses.dataclass
class Epoch:
    """The epoch in progress: its index, this process's running training meter, and its clocks."""

    index: int  # 0-based
    meter: Meter
    t_start: float  # perf_counter() at its start (time spent before an interruption included)
    t_train0: float  # perf_counter() when this session started training on it
    images: int = 0  # training images seen in this session, over all processes
    capped: bool = False  # ended early by --max-steps
    train_seconds: float = 0.0  # seconds of training in this session (set when the pass ends)


def pretrained_metadata(cfg: TrainConfig, model: Optional[nn.Module], spec: Any) -> dict[str, str]:
    """For a GSA-Net trained on the dataset ``spec`` (a :class:`~gsa.train.hooks.DataSpec`): its
    config and input normalisation (:func:`gsa.models.pretrained.model_records`), so that
    :func:`gsa.models.load` rebuilds it from the weight file alone; empty for other models."""
    from gsa.models import GSANet
    from gsa.models.pretrained import model_records

    net = unwrap(model) if model is not None else None
    if spec is None or not isinstance(net, GSANet):
        return {}
    mean, std = input_stats(cfg, spec)
    normalised = mean is not None and std is not None
    return model_records(
        net.config,
        mean=mean if normalised else None,
        std=usable_std(std) if normalised else None,  # as make_prepare divides
        input_size=(spec.in_channels, *spec.image_size),
        dataset=spec.name,
    )


def weights_metadata(
    cfg: TrainConfig, pos: Position, model: Optional[nn.Module] = None, spec: Any = None, **extra: Any
) -> dict[str, Any]:
    """Metadata stored in ``last.safetensors`` / ``best.safetensors``: step, epoch, model and
    dataset, the records of which network the weights belong to (:func:`gsa.train.identity.identity_metadata`
    of ``model``, built from ``cfg``), for a GSA-Net its config and the input normalisation of the
    dataset ``spec`` (:func:`pretrained_metadata`), plus ``extra`` (e.g. ``valid_acc``)."""
    return {
        "step": pos.step,
        "epoch": pos.epoch,
        "preset": cfg.preset,
        "group": cfg.group,
        "patch_size": cfg.patch_size,
        "dataset": cfg.dataset,
        **identity_metadata(model, cfg),
        **pretrained_metadata(cfg, model, spec),
        **extra,
    }
