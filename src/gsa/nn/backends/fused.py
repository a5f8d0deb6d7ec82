"""The ``"fused"`` backend: local attention in one native kernel per direction (CPU).

For each query pixel the kernel visits its ``k×k`` window once: content, group and positional
scores, both softmax levels of :mod:`gsa.nn.fastcore` (over the key group element inside each slot,
then over the slots), the weights summed over the query group element and the value aggregation,
with no intermediate tensor. Batch × heads is the SIMD lane axis, padded to a multiple of 8 and run as
blocks of 16 float32 lanes and a last block of 8, so every step is a vector operation without
gathers. The backward kernel recomputes the probabilities per pixel and accumulates the key, value
and table gradients in place; threads split lane blocks and stripes of rows so that no two write the
same key at once.

The kernels read and write batch × heads innermost: the attention layers' projections
(:meth:`gsa.nn.attention.AttentionHeads._project`) make ``q, k, v`` in that layout, so they reach the
kernel without a copy when batch × heads is a multiple of 8 (float32; 4 for float64), and the outputs
come back as views.

No tiles, chunks or band matrices: on small images and windows (rotMNIST-sized layers, where the
chunked core spends most of its time moving tiles) it is the fastest CPU path. It takes local
attention on float32/float64 CPU tensors; global attention goes to the chunked core (``why_not``
says why).

Attention dropout draws its masks inline from the counter hash of :mod:`gsa.nn.masks` with a per-call
seed: the probability of ``(b, pixel, a_q, h, offset, a_k)`` is kept where
:func:`gsa.nn.masks.keep_mask` of an ``(X·Y, Gq, |H|, k², Gk, B)`` tensor is (``b`` = batch × heads,
innermost), so the backward pass regenerates exactly the forward's masks. They are drawn like the
chunked core's masks but are not the same masks (those follow its chunk plan).

Registered as the custom operators ``gsa::local_attention`` and ``gsa::local_attention_backward``,
so ``torch.compile`` and :func:`torch.export.export` keep the kernels whole.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import masks as _masks
from .. import native as _native
from ..neighbourhood import Local
from . import AttentionCall
from .chunked import op_classes, op_seed

__all__ = ["BACKEND", "local_attention", "local_attention_backward"]

_MAX_PATCH = 63  # the kernel's window buffers hold up to 64 × 64 slots


def _dropout(dropout: float, seed: Tensor) -> tuple:
    """``(drop, scale)`` arguments of the kernels for attention dropout ``dropout`` keyed by ``seed``
    (:func:`gsa.nn.masks.dropout_params` switches the masks off for ``dropout = 0``)."""
    return _masks.dropout_params(dropout, int(seed), 0), 1.0 / (1.0 - dropout)


@torch.library.custom_op("gsa::local_attention", mutates_args=(), device_types="cpu")
def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    group_scores: Optional[Tensor],
    classes: Optional[Tensor],
    seed: Tensor,
    patch_size: int,
    dropout: float,
) -> Tensor:
    """``(B, X, Y, |H|, dv)``: see :func:`gsa.nn.functional.group_attention` (local windows; ``seed`` a
    0-d int64 tensor, the masks' key when ``dropout > 0``). The result is a view of the kernel's
    batch-innermost ``(X, Y, |H|, dv, lanes)`` output, as are the gradients of ``q, k, v``."""
    return _native.local_forward(q, k, v, table, group_scores, classes, patch_size, *_dropout(dropout, seed))


@local_attention.register_fake
def _(q, k, v, table, group_scores, classes, seed, patch_size, dropout):
    return _native.lanes_like(q, (*q.shape[1:3], table.shape[0], v.shape[-1]))


@torch.library.custom_op("gsa::local_attention_backward", mutates_args=(), device_types="cpu")
def local_attention_backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    group_scores: Optional[Tensor],
    classes: Optional[Tensor],
    seed: Tensor,
    patch_size: int,
    dropout: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv, dtable, dgroup_scores)`` (the last is empty without group scores)."""
    drop = _dropout(dropout, seed)
    dq, dk, dv, dtable, dgt = _native.local_backward(grad, q, k, v, table, group_scores, classes, patch_size, *drop)
    return dq, dk, dv, dtable, q.new_empty(0) if dgt is None else dgt


@local_attention_backward.register_fake
def _(grad, q, k, v, table, group_scores, classes, seed, patch_size, dropout):
    dgs = q.new_empty(0) if group_scores is None else group_scores.new_empty(group_scores.shape)
    return _native.lanes_like(q), _native.lanes_like(k), _native.lanes_like(v), table.new_empty(table.shape), dgs


def _setup_context(ctx, inputs, output):
    q, k, v, table, group_scores, classes, seed, patch_size, dropout = inputs
    ctx.save_for_backward(q, k, v, table, group_scores, classes, seed)
    ctx.settings = (patch_size, dropout)
    ctx.has_group_scores = group_scores is not None


def _backward(ctx, grad):
    q, k, v, table, group_scores, classes, seed = ctx.saved_tensors
    dq, dk, dv, dtable, dgs = local_attention_backward(grad, q, k, v, table, group_scores, classes, seed, *ctx.settings)
    return dq, dk, dv, dtable, dgs if ctx.has_group_scores else None, None, None, None, None


local_attention.register_autograd(_backward, setup_context=_setup_context)


class _Fused:
    name = "fused"
    description = "local attention in one native CPU kernel per direction"
    auto_devices: tuple[str, ...] = ("cpu",)

    def __repr__(self) -> str:
        return f"<gsa attention backend {self.name!r}>"

    def why_not(self, call: AttentionCall) -> str | None:
        """Local windows up to 63×63, one float32/float64 dtype on the CPU, native kernels built."""
        if not isinstance(call.neighbourhood, Local):
            return "the fused kernel computes local attention only (patch_size=None is global)"
        if call.patch_size > _MAX_PATCH:
            return f"the fused kernel takes windows up to {_MAX_PATCH}x{_MAX_PATCH}, got {call.patch_size}"
        reason = _native.why_not(call.q)
        if reason is not None:
            return reason
        tensors = [t for t in (call.k, call.v, call.table, call.group_scores) if t is not None]
        if any(t.dtype != call.q.dtype or t.device != call.q.device for t in tensors):
            return "the fused kernel needs q, k, v, the table and the group scores in one dtype on one device"
        return None

    def attend(self, call: AttentionCall) -> Tensor:
        """See :func:`local_attention`; the per-call dropout seed is :func:`.chunked.op_seed`'s."""
        args = (call.q, call.k, call.v, call.table, call.group_scores, op_classes(call), op_seed(call))
        return local_attention(*args, call.patch_size, call.dropout)


BACKEND = _Fused()
