"""The fast attention core: a factorised softmax over (slot, key group element), chunked over space.

For output element ``h``, query ``(a_q, i)`` and window slot ``κ`` holding key pixel ``j`` with
group element ``a_k``, the score is a sum of three terms::

    S[a_q, h, a_k, κ] = C[a_q, a_k, κ] + P[a_q, h, κ] + Gt[a_q, h, a_k]      (−inf outside the image)

with the content ``C = q·k`` shared by all ``h``, the positional term ``P = q_pos·ρ_h(κ)`` shared
by all ``a_k`` (tabulated once per offset, not per image), and the group term
``Gt = q_grp·E[h⁻¹ a_k a_q⁻¹ h]`` shared by all slots. ``Gt`` depends on ``h`` only through the
class ``u(h)`` of elements with the same relative-index table (:func:`gsa.nn.positional.conjugation_classes`: one
class for the abelian rotation groups, ``|H|/2`` for the dihedral ones).

**Two-level softmax.** The softmax over ``(a_k, κ)`` factorises exactly into a softmax over
``a_k`` inside each slot and a softmax over slots::

    T   = C + Gt_u                          (a_q, u, a_k, κ)      U/|H| of the score tensor
    E   = softmax_{a_k} T ;  lse = logsumexp_{a_k} T
    L   = P + lse_{u(h)}   (−inf outside)   (a_q, h, κ)           1/|G_k| of the score tensor
    Pn  = softmax_κ L
    softmax(S)[a_q, h, a_k, κ] = Pn[a_q, h, κ] · E[a_q, u(h), a_k, κ]

Both inner softmaxes are max-subtracted, so this is as safe as the plain softmax. Probabilities are
summed over the query index ``a_q`` before the value contraction (Eq. 16)::

    W[h, a_k, κ] = Σ_{a_q} Pn[a_q, h, κ] · E[a_q, u(h), a_k, κ]      out[h] = Σ_{a_k, κ} W · v

so for the rotation groups the ``|H|³ × pixels × K`` score tensor is never formed. Attention dropout
(which acts on every probability) forms it one ``a_q`` slice at a time.

**Backward.** :class:`AttentionFunction` keeps only its inputs; the backward pass recomputes each
chunk's ``E`` and ``Pn`` and applies the adjoint of every step (softmax backward over slots, then
over ``a_k``; the content/aggregation products through the same tiles), accumulating gradients of
keys and values slab by slab. Dropout masks are regenerated from a per-call seed.

**Native kernels.** On the CPU (float32/float64), the per-pixel steps (the two softmaxes with, for
local attention, the positional scores computed inline; the weights ``W``; the whole backward pass
from ``dW`` to ``dC``, ``dGt`` and the positional gradients) run as fused C++ kernels
(:mod:`gsa.nn.native`); the tile products stay with BLAS. Attention-dropout masks come from a
counter-based hash (:mod:`gsa.nn.masks`); the PyTorch path evaluates the same hash inside
:func:`gsa.nn.masks.hash_masks` (the tests compare the two paths with identical masks) and otherwise
draws cheaper masks with :func:`gsa.nn.masks.dropout_keep_mask` on the CPU; on other devices the seed is
a device tensor and the masks are always hashed there (:func:`draw_seed`).

Layout: :mod:`.spec` (chunking, scratch, masks per query element), :mod:`.forward` (one chunk, no-grad
and differentiable), :mod:`.backward` (one chunk's adjoint), and here the loops over chunks, the
autograd function and :func:`attend`.

The same mathematics is also written with differentiable tensor operations
(:func:`chunk_differentiable`): ``torch.compile`` traces that one (no graph breaks), and it serves
as a second reference for the hand-written backward in the tests.
"""

from __future__ import annotations

import torch

from .backward import chunk_backward
from .forward import chunk_differentiable, chunk_forward
from .spec import Spec, _Scratch

__all__ = [
    "Spec",
    "attend",
    "AttentionFunction",
    "forward_chunks",
    "backward_chunks",
    "chunk_forward",
    "chunk_backward",
    "chunk_differentiable",
    "draw_seed",
]


def _chunk_inputs(q, kp, vp, table, gt, spec: Spec, b0: int, b1: int, plan) -> tuple:
    """One chunk's ``(q, kslab, vslab, table, gt)``: batch entries ``b0 : b1``, the query rows of
    ``plan`` and the key/value rows they need (:meth:`Spec.slab`); views, ``gt`` None stays None."""
    rows = slice(plan.x0, plan.x1)
    gtc = None if gt is None else gt[b0:b1, rows]
    return q[b0:b1, rows], spec.slab(kp, b0, b1, plan), spec.slab(vp, b0, b1, plan), table, gtc


def forward_chunks(q, kp, vp, table, gt, spec: Spec) -> torch.Tensor:
    """The output ``(Bn, X, Y, H, dv)`` of every chunk, without autograd (``kp/vp`` padded by :meth:`Spec.pad`)."""
    scratch = _Scratch()

    def one(cid, b0, b1, plan):
        return chunk_forward(*_chunk_inputs(q, kp, vp, table, gt, spec, b0, b1, plan), plan, spec, cid, scratch)

    o = _over_chunks(spec, one)
    scratch.clear()
    return o


def backward_chunks(q, kp, vp, table, gt, spec: Spec, do):
    """Gradients ``(dq, dkp, dvp, dtable, dgt)`` of every chunk for the output gradient ``do``
    (``dkp``/``dvp`` padded like ``kp``/``vp``; ``dgt`` None without group scores)."""
    dq, dkp, dvp, dtable = (torch.zeros_like(t) for t in (q, kp, vp, table))
    dgt = None if gt is None else torch.zeros_like(gt)
    do = do.contiguous()
    state = {}

    def add_q(t, plan):
        dq[state["b0"] : state["b1"], plan.x0 : plan.x1] += t

    def add_slab(buf):
        def f(tiles, G, plan):
            b0, b1 = state["b0"], state["b1"]
            plan.add_folded(spec.slab(buf, b0, b1, plan), tiles, b1 - b0, G, spec.native)

        return f

    def add_gt(t, plan):
        dgt[state["b0"] : state["b1"], plan.x0 : plan.x1] += t

    grads = {"q": add_q, "k": add_slab(dkp), "v": add_slab(dvp), "table": dtable.add_, "gt": add_gt}
    scratch = _Scratch()
    for cid, b0, b1, plan in spec.chunks():
        state["b0"], state["b1"] = b0, b1
        inputs = _chunk_inputs(q, kp, vp, table, gt, spec, b0, b1, plan)
        chunk_backward(*inputs, plan, spec, cid, do[b0:b1, plan.x0 : plan.x1], grads, scratch)
    scratch.clear()
    return dq, dkp, dvp, dtable, dgt


class AttentionFunction(torch.autograd.Function):
    """Chunked attention with a hand-written, recomputing backward (memory: inputs only)."""

    @staticmethod
    def forward(ctx, q, kp, vp, table, gt, spec: Spec):
        ctx.spec = spec
        ctx.save_for_backward(q, kp, vp, table, gt)
        return forward_chunks(q, kp, vp, table, gt, spec)

    @staticmethod
    def backward(ctx, do):
        q, kp, vp, table, gt = ctx.saved_tensors
        return (*backward_chunks(q, kp, vp, table, gt, ctx.spec, do), None)


def draw_seed(device: torch.device) -> int | torch.Tensor:
    """A call's dropout seed: an int on the CPU (PyTorch's generator; masks as before), a 0-d int64
    tensor drawn on any other device, whose masks are then hashed there (:mod:`gsa.nn.masks`): no
    host round-trip, no generator per chunk, so CUDA graphs can capture the step."""
    if device.type == "cpu":
        return int(torch.randint(0, 2**62, (), device="cpu").item())
    return torch.randint(0, 2**62, (), dtype=torch.int64, device=device)


def attend(q, kp, vp, table, gt, spec: Spec, *, training: bool, recompute: bool, compiled: bool):
    """Run all chunks. ``q (Bn, X, Y, Gq, d)``, ``kp/vp`` padded by :meth:`Spec.pad`."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, kp, vp, table, gt))
    if needs_grad and recompute and not compiled:
        if spec.dropout > 0 and training:
            spec.seed = draw_seed(q.device)
        elif not training:
            spec.dropout = 0.0
        return AttentionFunction.apply(q, kp, vp, table, gt, spec)
    if not needs_grad and not compiled:
        if spec.dropout > 0 and training:
            spec.seed = draw_seed(q.device)
        else:
            spec.dropout = 0.0
        with torch.no_grad():
            return forward_chunks(q, kp, vp, table, gt, spec)
    # differentiable path (torch.compile traces this; also recompute=False)
    from torch.utils.checkpoint import checkpoint

    def one(cid, b0, b1, plan):
        args = (*_chunk_inputs(q, kp, vp, table, gt, spec, b0, b1, plan), plan, spec, training)
        if needs_grad and recompute:
            return checkpoint(chunk_differentiable, *args, use_reentrant=False)
        return chunk_differentiable(*args)

    return _over_chunks(spec, one)


def _over_chunks(spec: Spec, one) -> torch.Tensor:
    """``one(cid, b0, b1, plan)`` for every chunk, assembled: batch chunks along dim 0 within a row
    block, row blocks along dim 1."""
    rows, row, last = [], [], None
    for cid, b0, b1, plan in spec.chunks():
        if last is not None and plan.x0 != last:
            rows.append(row[0] if len(row) == 1 else torch.cat(row, 0))
            row = []
        last = plan.x0
        row.append(one(cid, b0, b1, plan))
    rows.append(row[0] if len(row) == 1 else torch.cat(row, 0))
    return rows[0] if len(rows) == 1 else torch.cat(rows, 1)
