"""An exponential moving average of the weights (``gsa train --ema DECAY``).

With ``--ema`` the run keeps, beside the weights the optimizer trains, their moving average
``w_ema <- d_n * w_ema + (1 - d_n) * w`` after every optimizer step, batch-norm statistics included
(``torch.optim.swa_utils.AveragedModel`` with ``use_buffers=True``). Validation, the choice of the
best epoch, ``best.safetensors`` and the test evaluate the averaged weights; ``last.safetensors``
holds the trained ones and ``last.state.pt`` the average, so a resumed run continues it exactly.

The decay ramps up as ``d_n = min(decay, (1 + n) / (10 + n))`` after ``n`` averaged steps: early
in training the average follows the weights closely instead of remembering the random
initialisation (with a fixed 0.999, 11 % of the average would still be the initial weights after
2,200 steps).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["decay_at", "make_ema"]


def decay_at(decay: float, n: int) -> float:
    """The decay used for the update after ``n`` averaged steps: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1.0 + n) / (10.0 + n))


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A moving average of ``model``'s parameters and buffers with the ramped ``decay``
    (:func:`decay_at`); ``update_parameters(model)`` after each optimizer step, ``.module`` is the
    averaged network (a copy of ``model``, on its device)."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")

    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n: torch.Tensor) -> None:
        d = decay_at(decay, int(n))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # integer buffers (batch norm's num_batches_tracked): the trained model's count
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
