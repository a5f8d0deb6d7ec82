"""One chunk's backward pass: recompute the probabilities, then the adjoint of every forward step
(PyTorch operations, or the fused native kernels), accumulating into the caller's gradient buffers."""

from __future__ import annotations

import torch

from .. import masks, native
from ..neighbourhood import bmm_narrow
from .forward import _accumulate, _native_probabilities, _probabilities, _scores
from .spec import _HALF, Spec, _by_class, _mask, _Scratch, _sum_by_class

__all__ = ["chunk_backward"]


def _value_grads(Wband, dot, Gk: int, plan, grads) -> None:
    """``dv`` from the weight band matrix ``(nt, M, NK)`` and the output-gradient tiles (``o = W·v``)."""
    grads["v"](bmm_narrow(Wband.transpose(1, 2), dot.reshape(Wband.shape[0], Wband.shape[1], -1)), Gk, plan)


def _gt_grads(dgt, plan, grads) -> None:
    """Group-score gradient tiles ``(*PIX, Gq, U, Gk)`` → the layer's layout."""
    grads["gt"](plan.from_tiles(dgt.flatten(-2)).unflatten(-1, dgt.shape[-2:]), plan)


def _content_grads(Cband, qt, kt, dqp, p: int, Gk: int, plan, grads) -> None:
    """``dq`` (plus the positional part ``dqp``) and ``dk`` from the content-score band ``(nt, M, NK)``
    (``C = band(q_tile · k_tileᵀ)``)."""
    dqt = bmm_narrow(Cband, kt).view(qt.shape)
    dqt[..., :p] += dqp
    grads["q"](plan.from_tiles(dqt), plan)
    grads["k"](bmm_narrow(Cband.transpose(1, 2), qt.reshape(Cband.shape[0], Cband.shape[1], -1)), Gk, plan)


def chunk_backward(q, kslab, vslab, table, gt, plan, spec: Spec, cid: int, do, grads, scratch: _Scratch):
    """Accumulate the gradients of one chunk into ``grads`` (callbacks into full-size buffers).

    ``do``: output gradient of the chunk ``(Bc, xc, Y, H, dv)``. Notation as in the module
    docstring; with ``X_a = dW ⊙ D_a``::

        dPn[a] = Σ_{a_k} X_a ⊙ E[a]          dE[a] = Σ_{h∈u} X_a ⊙ Pn[a]
        g      = Σ_κ Pn ⊙ dPn                s2    = Σ_{h∈u} Pn ⊙ g
        dP     = Pn ⊙ (dPn − g)              dT    = E ⊙ (dE − s2)     (Gk = 1: dT = Σ_{h∈u} dP)
        dC     = Σ_u dT                      dGt   = Σ_κ dT
    """
    p, u_of_h, H = spec.p, spec.u_of_h, spec.H
    dev = q.device
    if spec.native:
        return _chunk_backward_native(q, kslab, vslab, table, gt, plan, spec, cid, do, grads, scratch)
    qt, kt, C, P, gtt, mb = _scores(q, kslab, table, gt, plan, spec)
    ct = torch.float32 if q.dtype in _HALF else q.dtype
    E, Pn = _probabilities(C, gtt, P, mb, u_of_h)
    del C, P
    Gk = 1 if E is None else E.shape[-3]
    U = 1 if gt is None else gt.shape[-2]
    drop = spec.dropout > 0.0
    vt = plan.key_tiles(vslab)
    dot = plan.query_tiles(do)  # (*PIX, H, dv)
    # ---- dW = do · vᵀ per slot (needs no probabilities)
    dW = plan.content(dot, vt)  # (*PIX, H, Gk, Kx, Ky) strided view
    shape = (*Pn.shape[:-4], H, Gk, *Pn.shape[-2:])
    dWc = scratch.get("dW", shape, ct, dev)
    dWc.copy_(dW)
    if drop:
        dWc.mul_(1.0 / (1.0 - spec.dropout))
    del dW
    # ---- one pass over a_q: rebuild W and push dW through it
    W, dPn, dE = _weights_and_adjoint(Pn, E, dWc, shape, spec, cid, scratch)
    # ---- value side: o = agg(W, v)
    Wb = plan.band_matrix(W.to(vt.dtype), scratch)
    del W
    _value_grads(Wb, dot, Gk, plan, grads)
    del Wb, dWc
    # ---- the two softmaxes
    dP, dT = _softmax_adjoints(Pn, dPn, E, dE, u_of_h, U)
    del Pn, E
    dC = dT.sum(-4) if U > 1 else dT.squeeze(-4)  # (*PIX, Gq, Gk, Kx, Ky)
    if gt is not None:
        _gt_grads(dT.sum((-2, -1)), plan, grads)  # (*PIX, Gq, U, Gk)
    del dT
    # ---- positional: P = qp · table
    qp = qt[..., :p]
    dqp, dtab = plan.positional_backward(dP.to(qp.dtype), qp, table)
    grads["table"](dtab)
    del dP
    # ---- content: C = band(q_tile · k_tileᵀ)
    Cb = plan.band_matrix(dC.to(qt.dtype), scratch)  # (nt, M, NK)
    del dC
    _content_grads(Cb, qt, kt, dqp, p, Gk, plan, grads)


def _weights_and_adjoint(Pn, E, dWc, shape, spec: Spec, cid: int, scratch: _Scratch):
    """One pass over ``a_q``: rebuild ``W = Σ_a Pn ⊗ E ⊙ D`` (each dropout mask generated once) and push
    ``dW`` through it: ``X_a = dW ⊙ D_a``, ``dPn[a] = Σ_{a_k} X_a ⊙ E[a]``, ``dE[a] = Σ_{h∈u} X_a ⊙ Pn[a]``.
    Returns ``(W, dPn, dE)`` (``dE`` None when ``E`` is)."""
    u_of_h, ct, dev = spec.u_of_h, dWc.dtype, dWc.device
    Gq, U = Pn.shape[-4], 1 if E is None else E.shape[-4]
    drop = spec.dropout > 0.0
    W = torch.empty(shape, dtype=ct, device=dev)
    dPn = torch.empty_like(Pn)
    dE = None if E is None else torch.empty_like(E)
    tmp = scratch.get("prod", shape, ct, dev)
    prod = scratch.get("prod2", shape, ct, dev) if (drop and E is not None) else None
    for a in range(Gq):
        Pa = Pn.select(-4, a).unsqueeze(-3)  # (*PIX, H, 1, Kx, Ky)
        Ea = None if E is None else _by_class(E.select(-5, a), u_of_h, -4)
        mask = _mask(spec, cid, a, Gq, shape, ct, dev, scratch) if drop else None
        _accumulate(W, a, Pa, Ea, mask, prod)
        Xa = dWc if mask is None else mask.mul_(dWc)
        if E is None:
            dPn.select(-4, a).copy_(Xa.squeeze(-3))
            continue
        torch.mul(Xa, Ea, out=tmp)
        torch.sum(tmp, -3, out=dPn.select(-4, a))
        torch.mul(Xa, Pa, out=tmp)  # (*PIX, H, Gk, Kx, Ky)
        if u_of_h is None:
            torch.sum(tmp, -4, keepdim=True, out=dE.select(-5, a))
        else:
            dE.select(-5, a).copy_(_sum_by_class(tmp, u_of_h, -4, U))
    if drop:
        W.mul_(1.0 / (1.0 - spec.dropout))
    return W, dPn, dE


def _softmax_adjoints(Pn, dPn, E, dE, u_of_h, U: int):
    """Back through the softmax over slots and the one over ``a_k``: ``(dP, dT)`` (in place of ``dPn``,
    ``dE``); ``dT (*PIX, Gq, U, Gk, Kx, Ky)``, with ``Gk = 1`` when ``E`` is None."""
    g = (Pn * dPn).sum((-2, -1), keepdim=True)  # (*PIX, Gq, H, 1, 1)
    if E is None:
        dP = dPn.sub_(g).mul_(Pn)
        return dP, _sum_by_class(dP, u_of_h, -3, U).unsqueeze(-3)  # (*PIX, Gq, U, 1, Kx, Ky)
    s2 = _sum_by_class(Pn * g, u_of_h, -3, U)  # (*PIX, Gq, U, Kx, Ky)
    dP = dPn.sub_(g).mul_(Pn)
    return dP, dE.sub_(s2.unsqueeze(-3)).mul_(E)


def _chunk_backward_native(q, kslab, vslab, table, gt, plan, spec: Spec, cid: int, do, grads, scratch: _Scratch):
    """:func:`chunk_backward` with the native kernels: probabilities, weights, both softmax adjoints and
    (local attention) the positional adjoint in one fused pass per pixel; band matrices written in place."""
    qt, kt, gtt, tabT, E, Pn = _native_probabilities(q, kslab, table, gt, plan, spec, scratch)
    fused = tabT is not None
    Bc, H, p = qt.shape[0], spec.H, spec.p
    qp = qt[..., :p]
    Gq = Pn.shape[-4]
    Gk = 1 if E is None else E.shape[-3]
    vt = plan.key_tiles(vslab)
    dot = plan.query_tiles(do)  # (*PIX, H, dv)
    dW = plan.content(dot, vt)  # (*PIX, H, Gk, Kx, Ky) strided view
    Wband, Wv = plan.band_out(H, Gk, Bc, qt.dtype, qt.device, scratch, "band_w")
    Cband, dCv = plan.band_out(Gq, Gk, Bc, qt.dtype, qt.device, scratch, "band_c")
    dgt = None if gtt is None else torch.empty(gtt.shape, dtype=qt.dtype)
    if fused:
        dP = None
        dqp = torch.empty(qp.shape, dtype=qt.dtype)
        dtabT = torch.zeros_like(tabT)
    else:
        dP = scratch.get("dP", Pn.shape, Pn.dtype, Pn.device)
        dqp = dtabT = None
    native.backward(
        Pn,
        E,
        dW,
        Wv,
        dCv,
        dgt,
        spec.u_of_h,
        masks.dropout_params(spec.dropout, spec.seed, cid),
        1.0 / (1.0 - spec.dropout),
        dP,
        qp,
        tabT,
        dqp,
        dtabT,
    )
    del E, Pn, dW
    _value_grads(Wband, dot, Gk, plan, grads)
    if dgt is not None:
        _gt_grads(dgt, plan, grads)
    if fused:
        grads["table"](dtabT.transpose(1, 2))
    else:
        dqp, dtab = plan.positional_backward(dP, qp, table)
        grads["table"](dtab)
    _content_grads(Cband, qt, kt, dqp, p, Gk, plan, grads)
