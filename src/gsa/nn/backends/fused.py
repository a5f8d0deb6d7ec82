"""The ``"fused"`` backend: local attention in one native kernel per direction (CPU).

For each query pixel the kernel visits its ``k×k`` window once: content, group and positional
scores, both softmax levels of :mod:`gsa.nn.fastcore` (over the key group element inside each slot,
then over the slots), the weights summed over the query group element and the value aggregation,
with no intermediate tensor. The backward kernel recomputes the probabilities per pixel and
accumulates the key, value and table gradients in place. Work is split over batch × heads, so no
two threads write the same key's gradient.

No tiles, chunks or band matrices: on small images and windows (rotMNIST-sized layers, where the
chunked core spends most of its time moving tiles) it is the fastest CPU path. It takes local
attention without attention dropout (``dropout=0``, which every evaluation and the ``mini`` recipe
use) on float32/float64 CPU tensors; anything else goes to the chunked core (``why_not`` says why).

Registered as the custom operators ``gsa::local_attention`` and ``gsa::local_attention_backward``,
so ``torch.compile`` and :func:`torch.export.export` keep the kernels whole.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import native as _native
from ..neighbourhood import Local
from . import AttentionCall

__all__ = ["BACKEND", "local_attention", "local_attention_backward"]

_MAX_PATCH = 63  # the kernel's window buffers hold up to 64 × 64 slots


@torch.library.custom_op("gsa::local_attention", mutates_args=(), device_types="cpu")
def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    group_scores: Optional[Tensor],
    classes: Optional[Tensor],
    patch_size: int,
) -> Tensor:
    """``(B, X, Y, |H|, dv)``: see :func:`gsa.nn.functional.group_attention` (local, no dropout)."""
    gt = None if group_scores is None else group_scores.contiguous()
    return _native.local_forward(
        q.contiguous(), k.contiguous(), v.contiguous(), table.contiguous(), gt, classes, patch_size
    )


@local_attention.register_fake
def _(q, k, v, table, group_scores, classes, patch_size):
    B, X, Y = q.shape[:3]
    return q.new_empty((B, X, Y, table.shape[0], v.shape[-1]))


@torch.library.custom_op("gsa::local_attention_backward", mutates_args=(), device_types="cpu")
def local_attention_backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    group_scores: Optional[Tensor],
    classes: Optional[Tensor],
    patch_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv, dtable, dgroup_scores)`` (the last is empty without group scores)."""
    gt = None if group_scores is None else group_scores.contiguous()
    dq, dk, dv, dtable, dgt = _native.local_backward(
        grad.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(), table.contiguous(), gt, classes, patch_size
    )
    return dq, dk, dv, dtable, q.new_empty(0) if dgt is None else dgt


@local_attention_backward.register_fake
def _(grad, q, k, v, table, group_scores, classes, patch_size):
    dgs = q.new_empty(0) if group_scores is None else torch.empty_like(group_scores)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(table), dgs


def _setup_context(ctx, inputs, output):
    q, k, v, table, group_scores, classes, patch_size = inputs
    ctx.save_for_backward(q, k, v, table, group_scores, classes)
    ctx.patch_size = patch_size
    ctx.has_group_scores = group_scores is not None


def _backward(ctx, grad):
    q, k, v, table, group_scores, classes = ctx.saved_tensors
    dq, dk, dv, dtable, dgs = local_attention_backward(grad, q, k, v, table, group_scores, classes, ctx.patch_size)
    return dq, dk, dv, dtable, dgs if ctx.has_group_scores else None, None, None


local_attention.register_autograd(_backward, setup_context=_setup_context)


def _classes(call: AttentionCall) -> Tensor | None:
    if call.classes is None or call.group_scores is None or call.group_scores.shape[4] == 1:
        return None
    return call.classes.to(call.q.device)


class _Fused:
    name = "fused"
    description = "local attention in one native CPU kernel per direction (no dropout)"
    auto_devices: tuple[str, ...] = ("cpu",)

    def __repr__(self) -> str:
        return f"<gsa attention backend {self.name!r}>"

    def why_not(self, call: AttentionCall) -> str | None:
        """Local windows up to 63×63, no attention dropout, one float32/float64 dtype, native kernels built."""
        if not isinstance(call.neighbourhood, Local):
            return "the fused kernel computes local attention only (patch_size=None is global)"
        if call.patch_size > _MAX_PATCH:
            return f"the fused kernel takes windows up to {_MAX_PATCH}x{_MAX_PATCH}, got {call.patch_size}"
        if call.dropout > 0:
            return "the fused kernel has no attention dropout (the chunked core draws its masks)"
        reason = _native.why_not(call.q)
        if reason is not None:
            return reason
        tensors = [t for t in (call.k, call.v, call.table, call.group_scores) if t is not None]
        if any(t.dtype != call.q.dtype or t.device != call.q.device for t in tensors):
            return "the fused kernel needs q, k, v, the table and the group scores in one dtype on one device"
        return None

    def attend(self, call: AttentionCall) -> Tensor:
        """See :func:`local_attention`."""
        return local_attention(call.q, call.k, call.v, call.table, call.group_scores, _classes(call), call.patch_size)


BACKEND = _Fused()
