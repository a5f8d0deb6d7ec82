"""What happens to a batch: input normalisation, the fp32 loss, and the evaluation pass."""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import Meter
from .precision import Precision

__all__ = ["compute_loss", "make_prepare", "usable_std", "evaluate"]


def compute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32, outside autocast (stable under fp16/bf16)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), labels)


def make_prepare(
    mean: Optional[tuple[float, ...]], std: Optional[tuple[float, ...]], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-channel normalisation ``(x - mean) / std`` on ``device`` (identity without stats).

    Applied after any rotation, so the zero fill of rotated [0, 1] images stays "black". A channel
    whose std is below :data:`STD_FLOOR` (constant, e.g. an opaque alpha channel) is only centred,
    with a warning, instead of divided by zero.
    """
    if mean is None or std is None:
        return lambda x: x
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(_usable_std(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device, torch.float32, non_blocking=True) - m) / s

    return prepare


#: Channels with a pixel std below this are centred but not scaled by :func:`make_prepare`.
STD_FLOOR = 1e-4


def usable_std(std: tuple[float, ...]) -> list[float]:
    """The divisors :func:`make_prepare` uses: ``std`` with 1.0 for every channel whose std is below
    :data:`STD_FLOOR` (or not a number)."""
    return [float(v) if float(v) >= STD_FLOOR else 1.0 for v in std]  # NaN fails the comparison too


def _usable_std(std: tuple[float, ...]) -> list[float]:
    """:func:`usable_std`, with a warning naming the channels changed."""
    flat = usable_std(std)
    bad = [i for i, v in enumerate(std) if not float(v) >= STD_FLOOR]
    if bad:
        warnings.warn(
            f"gsa: channel(s) {', '.join(map(str, bad))} of the training images are constant "
            f"(pixel std {', '.join(f'{std[i]:g}' for i in bad)}); they are centred, not divided by "
            "their std",
            RuntimeWarning,
            stacklevel=3,
        )
    return flat


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    precision: Precision,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[Meter, bool]:
    """Loss/accuracy sums of this process (not yet reduced) and whether it was cut short."""
    was_training = model.training
    model.eval()
    meter = Meter()
    stopped = False
    try:
        for x, y in batches:
            if should_stop():
                stopped = True
                break
            x = prepare(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            with precision.autocast():
                out = model(x)
            logits = out.float()
            meter.add(logits, y, compute_loss(logits, y))
    finally:
        model.train(was_training)
    return meter, stopped
