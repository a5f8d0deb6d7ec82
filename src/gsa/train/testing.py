"""A tiny model and dataset for testing the engine quickly (seconds on a CPU).

``toy_hooks()`` returns :class:`~gsa.train.hooks.Hooks` that train :class:`ToyNet` on
:func:`toy_split` instead of a GSA-Net on a real dataset. The CLI picks it up from the
environment: ``GSA_HOOKS=gsa.train.testing:toy_hooks gsa train ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .config import TrainConfig
from .hooks import DataSpec, Hooks

TOY_SIZES = {"train": 96, "valid": 32, "test": 48}
TOY_SPEC = DataSpec(name="toy", in_channels=1, num_classes=3, image_size=(12, 12), mean=(0.25,), std=(0.3,))


def toy_split(split: str, size: int = 12) -> TensorDataset:
    """Rings of three radii (the class) with noise: rotation invariant, learnable in a few steps."""
    n = TOY_SIZES[split]
    g = torch.Generator().manual_seed({"train": 1, "valid": 2, "test": 3}[split])
    labels = torch.arange(n) % 3
    labels = labels[torch.randperm(n, generator=g)]
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2)
    radii = torch.tensor([1.5, 3.0, 4.5])
    rad = radii[labels].view(n, 1, 1) + 0.3 * torch.randn(n, 1, 1, generator=g)
    img = torch.exp(-((r.unsqueeze(0) - rad) ** 2) / 0.8)
    img = img + 0.15 * torch.rand(n, size, size, generator=g)
    return TensorDataset(img.clamp(0, 1).unsqueeze(1).float(), labels.long())


@dataclass
class ToyConfig:
    in_channels: int = 1
    num_classes: int = 3
    width: int = 8
    dropout: float = 0.0
    batch_norm: bool = False


class ToyNet(nn.Module):
    """Small CNN made invariant to 90-degree rotations by averaging over the four rotations."""

    def __init__(self, config: Optional[ToyConfig] = None) -> None:
        super().__init__()
        self.config = config or ToyConfig()
        c = self.config
        self.conv1 = nn.Conv2d(c.in_channels, c.width, 3, padding=1)
        self.norm = nn.BatchNorm2d(c.width) if c.batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.drop = nn.Dropout(c.dropout)
        self.conv2 = nn.Conv2d(c.width, c.width, 3, padding=1)
        self.head = nn.Linear(c.width, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.norm(self.conv1(x))))
        return self.act(self.conv2(h)).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = sum(self.features(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)) / 4
        return self.head(f)


def toy_model(cfg: TrainConfig, spec: DataSpec) -> nn.Module:
    return ToyNet(
        ToyConfig(
            in_channels=spec.in_channels,
            num_classes=spec.num_classes,
            dropout=cfg.dropout or 0.0,
            batch_norm=(cfg.norm == "batch"),
        )
    )


def toy_hooks(model_fn: Optional[Callable[[TrainConfig, DataSpec], nn.Module]] = None) -> Hooks:
    """Hooks training :class:`ToyNet` (or ``model_fn``) on the toy rings dataset."""
    cache: dict[str, Any] = {}

    def dataset_fn(cfg: TrainConfig, split: str) -> TensorDataset:
        if split not in cache:
            cache[split] = toy_split(split)
        return cache[split]

    return Hooks(
        model_fn=model_fn or toy_model,
        dataset_fn=dataset_fn,
        info_fn=lambda name: TOY_SPEC,
    )


def toy_config(out: Any, **overrides: Any) -> TrainConfig:
    """A fast CPU config for the toy hooks: 2 epochs x 6 steps, small rotation/invariance checks."""
    from .config import make_config

    values: dict[str, Any] = dict(
        dataset="toy",
        epochs=2,
        batch_size=16,
        lr=1e-2,
        rotation_step=90.0,
        rotation_subset=16,
        invariance_subset=8,
        progress="none",
        tensorboard=False,
        device="cpu",
        out=str(out),
    )
    values.update(overrides)
    return make_config("mini", **values)
