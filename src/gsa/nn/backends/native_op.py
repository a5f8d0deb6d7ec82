"""The chunked core with the native kernels as PyTorch custom operators: ``gsa::chunked_attention``.

:func:`torch.library.custom_op` makes the core one opaque operator with a fake (meta) implementation
that gives the output's shape and a registered backward (a second operator,
``gsa::chunked_attention_backward``), so ``torch.compile`` (inductor included) and
:func:`torch.export.export` keep the native kernels in the graph instead of tracing the slower
PyTorch path. Keys and values enter unpadded; ``patch_size`` 0 means global attention; the dropout
seed is a 0-d int64 tensor (drawn in the graph, so compiled training draws a new one per step).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import fastcore as _fc
from . import neighbourhood

__all__ = ["chunked_attention", "chunked_attention_backward"]


def _spec(
    q: Tensor,
    k: Tensor,
    table: Tensor,
    classes: Optional[Tensor],
    seed: Tensor,
    patch_size: int,
    dropout: float,
    chunk_elements: int,
) -> _fc.Spec:
    Bn, X, Y, Gq, _ = q.shape
    nb = neighbourhood(patch_size or None)  # shared: its tile masks are cached across calls
    return _fc.Spec(
        nb,
        X,
        Y,
        Bn,
        Gq,
        k.shape[3],
        table.shape[0],
        table.shape[-1],
        classes,
        chunk_elements,
        dropout,
        seed=int(seed),
        native=True,
    )


@torch.library.custom_op("gsa::chunked_attention", mutates_args=(), device_types="cpu")
def chunked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    group_scores: Optional[Tensor],
    classes: Optional[Tensor],
    seed: Tensor,
    patch_size: int,
    dropout: float,
    chunk_elements: int,
) -> Tensor:
    """``(B, X, Y, |H|, dv)``: see :func:`gsa.nn.functional.group_attention` (``patch_size`` 0: global)."""
    spec = _spec(q, k, table, classes, seed, patch_size, dropout, chunk_elements)
    with torch.no_grad():
        return _fc.forward_chunks(q, spec.pad(k), spec.pad(v), table, group_scores, spec).contiguous()


@chunked_attention.register_fake
def _(q, k, v, table, group_scores, classes, seed, patch_size, dropout, chunk_elements):
    B, X, Y = q.shape[:3]
    return q.new_empty((B, X, Y, table.shape[0], v.shape[-1]))


@torch.library.custom_op("gsa::chunked_attention_backward", mutates_args=(), device_types="cpu")
def chunked_attention_backward(
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
    chunk_elements: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv, dtable, dgroup_scores)`` (the last is empty without group scores)."""
    spec = _spec(q, k, table, classes, seed, patch_size, dropout, chunk_elements)
    with torch.no_grad():
        dq, dkp, dvp, dtable, dgs = _fc.backward_chunks(
            q, spec.pad(k), spec.pad(v), table, group_scores, spec, grad.contiguous()
        )
    X, Y, r = q.shape[1], q.shape[2], spec.r
    dk, dv = dkp[:, r : r + X, r : r + Y], dvp[:, r : r + X, r : r + Y]
    dgs = q.new_empty(0) if dgs is None else dgs.contiguous()
    return dq.contiguous(), dk.contiguous(), dv.contiguous(), dtable.contiguous(), dgs


def _empty_grads(q: Tensor, k: Tensor, v: Tensor, table: Tensor, group_scores: Optional[Tensor]) -> tuple:
    """Fake gradients ``(dq, dk, dv, dtable, dgroup_scores)`` of the chunked operator, contiguous whatever
    the inputs' strides (shapes only; the last is empty without group scores)."""
    dgs = q.new_empty(0) if group_scores is None else group_scores.new_empty(group_scores.shape)
    return tuple(t.new_empty(t.shape) for t in (q, k, v, table)) + (dgs,)


@chunked_attention_backward.register_fake
def _(grad, q, k, v, table, group_scores, classes, seed, patch_size, dropout, chunk_elements):
    return _empty_grads(q, k, v, table, group_scores)


def _setup_context(ctx, inputs, output):
    q, k, v, table, group_scores, classes, seed, patch_size, dropout, chunk_elements = inputs
    ctx.save_for_backward(q, k, v, table, group_scores, classes, seed)
    ctx.settings = (patch_size, dropout, chunk_elements)
    ctx.has_group_scores = group_scores is not None


def _backward(ctx, grad):
    q, k, v, table, group_scores, classes, seed = ctx.saved_tensors
    dq, dk, dv, dtable, dgs = chunked_attention_backward(
        grad, q, k, v, table, group_scores, classes, seed, *ctx.settings
    )
    return dq, dk, dv, dtable, dgs if ctx.has_group_scores else None, None, None, None, None, None


chunked_attention.register_autograd(_backward, setup_context=_setup_context)
