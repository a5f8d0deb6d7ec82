"""One chunk's forward pass: the two-level softmax, the weights ``W`` and the value sum, in no-grad
arithmetic (:func:`chunk_forward`, also recomputed in backward) and in differentiable operations
(:func:`chunk_differentiable`, traced by ``torch.compile``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import masks, native
from .spec import _HALF, Spec, _by_class, _mask, _Scratch

__all__ = ["chunk_forward", "chunk_differentiable"]


def _probabilities(C, Gt, P, mb, u_of_h):
    """No-grad two-level softmax: ``E (*PIX, Gq, U, Gk, Kx, Ky)`` (None when ``Gk == 1``) and
    ``Pn (*PIX, Gq, H, Kx, Ky)``; half precision is computed in float32."""
    ct = torch.float32 if C.dtype in _HALF else C.dtype
    Gk = C.shape[-3]
    if Gk == 1:
        lse = C.to(ct)  # the size-1 Gk axis doubles as the class axis: (*PIX, Gq, 1, Kx, Ky)
        if Gt is not None:
            lse = lse + Gt.to(ct)[..., 0, None, None]
        E = None
    else:
        U = 1 if Gt is None else Gt.shape[-2]
        T = torch.empty((*C.shape[:-3], U, *C.shape[-3:]), dtype=ct, device=C.device)
        if Gt is None:
            T.copy_(C.unsqueeze(-4))
        else:
            torch.add(C.unsqueeze(-4), Gt.to(ct)[..., None, None], out=T)
        c = T.amax(-3, keepdim=True)
        T.sub_(c).exp_()
        s = T.sum(-3, keepdim=True)
        T.div_(s)
        lse = c.add_(s.log_()).squeeze(-3)  # (*PIX, Gq, U, Kx, Ky)
        E = T
    if mb is not None:
        lse = lse + mb
    if P.dtype == ct and P.is_contiguous():
        L = P.add_(_by_class(lse, u_of_h, -3))
    else:
        L = P.to(ct) + _by_class(lse, u_of_h, -3)
    Pn = torch.softmax(L.flatten(-2), -1).view(L.shape)  # over slots
    return E, Pn


def _accumulate(W, a: int, Pa, Ea, mask, prod) -> None:
    """``W (+)= Pa ⊙ Ea ⊙ mask`` for query element ``a`` (``a == 0`` writes ``W``); ``Ea``/``mask`` may be
    ``None``; ``prod`` is scratch for ``Pa ⊙ Ea`` when both factors and a mask are present."""
    if mask is None:
        if Ea is None:
            W.copy_(Pa) if a == 0 else W.add_(Pa)
        else:
            torch.mul(Pa, Ea, out=W) if a == 0 else W.addcmul_(Pa, Ea)
        return
    if Ea is not None:
        Pa = torch.mul(Pa, Ea, out=prod)
    torch.mul(Pa, mask, out=W) if a == 0 else W.addcmul_(Pa, mask)


def _weights(E, Pn, u_of_h, spec: Spec, cid: int, device, scratch: _Scratch):
    """``W = Σ_{a_q} Pn ⊗ E`` (dropout when ``spec.dropout > 0``): ``(*PIX, H, Gk, Kx, Ky)``."""
    Gq = Pn.shape[-4]
    drop = spec.dropout > 0.0
    Gk = 1 if E is None else E.shape[-3]
    shape = (*Pn.shape[:-4], Pn.shape[-3], Gk, *Pn.shape[-2:])
    W = torch.empty(shape, dtype=Pn.dtype, device=device)
    tmp = scratch.get("prod", shape, Pn.dtype, device) if drop else None
    for a in range(Gq):
        Pa = Pn.select(-4, a).unsqueeze(-3)  # (*PIX, H, 1, Kx, Ky)
        Ea = None if E is None else _by_class(E.select(-5, a), u_of_h, -4)  # (*PIX, U|H, Gk, Kx, Ky)
        mask = None
        if drop:
            mask = _mask(spec, cid, a, Gq, shape, Pn.dtype, device, scratch)
        _accumulate(W, a, Pa, Ea, mask, tmp)
    if drop:
        W.mul_(1.0 / (1.0 - spec.dropout))
    return W


def _table_t(table: torch.Tensor) -> torch.Tensor:
    """Encoding table ``(H, K, p)`` → ``(H, p, K)`` contiguous (the native kernels' layout)."""
    return table.transpose(1, 2).contiguous()


def _scores(q, kslab, table, gt, plan, spec: Spec, positional: bool = True):
    """Tiles, content, positional scores (None unless ``positional``) and mask of one chunk."""
    qt = plan.query_tiles(q)
    kt = plan.key_tiles(kslab)
    C = plan.content(qt, kt)
    P = plan.positional(qt[..., : spec.p], table) if positional else None
    gtt = None if gt is None else plan.query_tiles(gt.flatten(-2)).unflatten(-1, gt.shape[-2:])
    ct = torch.float32 if q.dtype in _HALF else q.dtype
    mb = plan.mask_bias(q.device, ct)
    return qt, kt, C, P, gtt, mb


def _native_probabilities(q, kslab, table, gt, plan, spec: Spec, scratch: _Scratch):
    """Tiles and the two-level softmax of one chunk by the native kernel: ``(qt, kt, gtt, tabT, E, Pn)``.

    Local attention computes the positional scores inside the kernel from ``q_pos`` and the transposed
    table ``tabT``; global attention passes them precomputed (``tabT`` is then None)."""
    fused = plan.local
    qt, kt, C, P, gtt, mb = _scores(q, kslab, table, gt, plan, spec, positional=not fused)
    tabT = _table_t(table) if fused else None
    E, Pn = native.probabilities(C, gtt, P, mb, spec.u_of_h, spec.H, scratch, qt[..., : spec.p], tabT)
    return qt, kt, gtt, tabT, E, Pn


def chunk_forward(q, kslab, vslab, table, gt, plan, spec: Spec, cid: int, scratch: _Scratch):
    """Output of one chunk, no autograd: ``(Bc, xc, Y, H, dv)``."""
    if spec.native:
        _, _, _, _, E, Pn = _native_probabilities(q, kslab, table, gt, plan, spec, scratch)
        Gk = 1 if E is None else E.shape[-3]
        band, Wv = plan.band_out(spec.H, Gk, q.shape[0], q.dtype, q.device, scratch)
        native.weights(
            Pn, E, Wv, spec.u_of_h, masks.dropout_params(spec.dropout, spec.seed, cid), 1.0 / (1.0 - spec.dropout)
        )
        del E, Pn
        return plan.from_tiles(plan.aggregate_band(band, plan.key_tiles(vslab)))
    qt, kt, C, P, gtt, mb = _scores(q, kslab, table, gt, plan, spec)
    E, Pn = _probabilities(C, gtt, P, mb, spec.u_of_h)
    del C, P
    W = _weights(E, Pn, spec.u_of_h, spec, cid, q.device, scratch)
    del E, Pn
    vt = plan.key_tiles(vslab)
    o = plan.aggregate(W.to(vt.dtype), vt, scratch)
    return plan.from_tiles(o)


def chunk_differentiable(q, kslab, vslab, table, gt, plan, spec: Spec, training: bool):
    """Same function as :func:`chunk_forward`, written with out-of-place differentiable operations."""
    p, u_of_h = spec.p, spec.u_of_h
    qt = plan.query_tiles(q)
    kt = plan.key_tiles(kslab)
    vt = plan.key_tiles(vslab)
    C = plan.content(qt, kt)
    P = plan.positional(qt[..., :p], table)
    gtt = None if gt is None else plan.query_tiles(gt.flatten(-2)).unflatten(-1, gt.shape[-2:])
    ct = torch.float32 if q.dtype in _HALF else q.dtype
    mb = plan.mask_bias(q.device, ct)
    C, P = C.to(ct), P.to(ct)
    Gk = C.shape[-3]
    T = C.unsqueeze(-4)
    if gtt is not None:
        T = T + gtt.to(ct)[..., None, None]  # (*PIX, Gq, U, Gk, Kx, Ky)
    if Gk == 1:
        lse, E = T.squeeze(-3), None
    else:
        lse = torch.logsumexp(T, -3)
        E = torch.softmax(T, -3)
    if mb is not None:
        lse = lse + mb
    L = P + _by_class(lse, u_of_h, -3)
    Pn = torch.softmax(L.flatten(-2), -1).view(L.shape)
    Gq = Pn.shape[-4]
    W = None
    for a in range(Gq):
        pr = Pn.select(-4, a).unsqueeze(-3)
        if E is not None:
            pr = pr * _by_class(E.select(-5, a), u_of_h, -4)
        if training and spec.dropout > 0:
            pr = F.dropout(pr, spec.dropout, True)
        W = pr if W is None else W + pr
    o = plan.aggregate(W.to(vt.dtype), vt)
    return plan.from_tiles(o)
