"""The learning-rate schedule of a run: linear warm-up, then constant or a cosine decay to zero."""

from __future__ import annotations

import math

__all__ = ["LRSchedule"]


class LRSchedule:
    """LR factor (multiplier of the base LR) per optimizer step.

    Linear warm-up over ``warmup`` steps, from ``1/warmup`` at step 0 to 1, then either
    constant (``kind="constant"``) or a cosine decay (``kind="cosine"``) that reaches 0
    at step ``total`` and stays there. ``total`` is at least 1, ``warmup`` is clipped to
    ``[0, total]``.

    An instance is a plain function of the step number, as
    :class:`torch.optim.lr_scheduler.LambdaLR` expects::

        schedule = LRSchedule("cosine", total=100, warmup=10)
        schedule(0), schedule(9), schedule(100)   # 0.1, 1.0, 0.0
    """

    def __init__(self, kind: str, total: int, warmup: int = 0) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total), max(0, min(warmup, total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        t = (min(step, self.total) - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self) -> str:
        return f"LRSchedule({self.kind!r}, total={self.total}, warmup={self.warmup})"
