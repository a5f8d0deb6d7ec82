"""Mixed precision: autocast + GradScaler, arranged so that AMP does not diverge.

The original GSA-Nets code reported that mixed precision together with its LR scheduler
diverged. Two things go wrong in such setups, and both are handled here:

1. With fp16, :class:`torch.amp.GradScaler` *skips* the optimizer step when the scaled
   gradients overflow (inf/NaN) and lowers the scale. If the LR scheduler is stepped
   anyway, the schedule runs ahead of the weights (and PyTorch warns that
   ``lr_scheduler.step()`` was called before ``optimizer.step()``). We detect the skipped
   step (the scale went down) and do not step the scheduler then.
2. Logits, softmax and the loss computed in fp16 overflow / lose precision. The model
   runs under autocast, but its output is cast to fp32 before the loss, and the loss
   (log-softmax + NLL) is computed outside autocast in fp32.

``--grad-clip`` unscales the gradients with the scaler before clipping, so the threshold
applies to the true gradient norm. bf16 needs no scaler (same exponent range as fp32).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import ContextManager

import torch

from ..errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_for_training(mode: str, device: torch.device) -> None:
    """Warn about settings that train badly: fp16 autocast on the CPU (measured about 7x slower than fp32 on a
    small GSA-Net, and the GradScaler skipped every step of a short run while it backed off)."""
    if mode == "fp16" and device.type == "cpu":
        warnings.warn(
            "gsa: --precision fp16 on the CPU is slower than fp32 there and its grad scaler may skip the "
            "first steps; prefer fp32 or bf16",
            RuntimeWarning,
            stacklevel=2,
        )


class Precision:
    """Autocast context and grad scaler for ``mode`` in {"fp32", "bf16", "fp16"}."""

    def __init__(self, mode: str, device: torch.device, *, init_scale: float = 2.0**16) -> None:
        if mode not in DTYPES:
            raise ConfigError(f"unknown precision {mode!r}; choose one of: {', '.join(DTYPES)}")
        self.mode = mode
        self.device = device
        self.dtype = DTYPES[mode]
        if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--precision bf16 is not supported on this GPU; use fp16 or fp32")
        self.scaler = torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=(mode == "fp16"))

    def autocast(self) -> ContextManager:
        """Autocast for the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_and_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters,
        grad_clip: float | None = None,
    ) -> tuple[bool, float | None]:
        """Backward, optional clipping, optimizer step. Returns ``(stepped, grad_norm)``.

        ``stepped`` is False when the step was not applied because a gradient is inf/NaN: the fp16
        scaler skipped it (and lowered its scale), or, without a scaler, the gradient norm is
        non-finite (``grad_norm`` then says so, and the caller must stop). The caller must not step
        the LR scheduler for a skipped step.
        """
        scaler = self.scaler
        params = [p for p in parameters if p.grad is not None or p.requires_grad]
        scaler.scale(loss).backward()
        grad_norm = None
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        if not scaler.is_enabled():
            if grad_norm is None:
                grads = [p.grad for p in params if p.grad is not None]
                grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            if not math.isfinite(grad_norm):
                return False, grad_norm  # nothing applied: the weights stay finite
            optimizer.step()
            return True, grad_norm
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale_before
        return stepped, grad_norm

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler.is_enabled() and state:
            self.scaler.load_state_dict(state)
