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
counter-based hash (:func:`dropout_params`, :func:`keep_mask`); the PyTorch path here evaluates the
same hash inside :func:`hash_masks` (the tests compare the two paths with identical masks) and otherwise
draws its masks with :func:`dropout_keep_mask`, which is cheaper in PyTorch operations.

The same mathematics is also written with differentiable tensor operations
(:func:`chunk_differentiable`): ``torch.compile`` traces that one (no graph breaks), and it serves
as a second reference for the hand-written backward in the tests.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from . import native
from .neighbourhood import bmm_narrow

__all__ = [
    "Spec",
    "attend",
    "AttentionFunction",
    "forward_chunks",
    "backward_chunks",
    "chunk_forward",
    "chunk_differentiable",
    "dropout_params",
    "keep_mask",
    "hash_masks",
    "dropout_keep_mask",
]

_HALF = (torch.float16, torch.bfloat16)


class Spec:
    """Everything about one attention call that is not a tensor (shapes, chunking, dropout)."""

    def __init__(self, nb, X, Y, Bn, Gq, Gk, H, p, u_of_h, chunk_elements, dropout, seed=None, native=False):
        self.nb, self.X, self.Y, self.Bn = nb, X, Y, Bn
        self.native = bool(native)  # the per-pixel steps in the C++ kernels (the backend checked they can run)
        self.Gq, self.Gk, self.H, self.p = Gq, Gk, H, p
        self.u_of_h = u_of_h  # (H,) long, or None when all h share one class
        self.dropout = float(dropout)
        self.seed = seed
        Tx, Ty = nb.tiles(X, Y, Gq, Gk, H)
        self.tiles = (Tx, Ty)
        per_pixel = H * Gq * nb.slots(X, Y) * Gk
        budget = max(1, chunk_elements // per_pixel)  # query pixels per chunk
        rows = max(Tx, (budget // max(Bn * Y, 1)) // Tx * Tx)
        self.rows = min(rows, -(-X // Tx) * Tx)
        if self.rows > Tx or budget >= Bn * Y * Tx:
            self.bchunk = Bn
        else:
            self.bchunk = max(1, budget // (Y * Tx))
        self.local = hasattr(nb, "k")
        self.r = nb.r if self.local else 0
        if self.local:
            self.pad_x = -(-X // Tx) * Tx - X
            self.pad_y = -(-Y // Ty) * Ty - Y
        else:
            self.pad_x = self.pad_y = 0

    def chunks(self):
        """Yield ``(chunk id, b0, b1, plan)`` for every chunk of batch·heads × query rows."""
        cid = 0
        for x0 in range(0, self.X, self.rows):
            x1 = min(self.X, x0 + self.rows)
            plan = self.nb.plan(self.X, self.Y, x0, x1, self.Gq, self.Gk, self.H, tiles=self.tiles)
            for b0 in range(0, self.Bn, self.bchunk):
                yield cid, b0, min(self.Bn, b0 + self.bchunk), plan
                cid += 1

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """Keys/values ``(Bn, X, Y, G, c)`` → zero-padded for the halo of every tile."""
        if not self.local:
            return t
        r = self.r
        if not (r or self.pad_x or self.pad_y):
            return t
        return F.pad(t, (0, 0, 0, 0, r, r + self.pad_y, r, r + self.pad_x))

    def slab(self, t: torch.Tensor, b0: int, b1: int, plan) -> torch.Tensor:
        """Rows ``b0 : b1`` of the (padded) keys/values that the query chunk of ``plan`` needs."""
        if not self.local:
            return t[b0:b1]
        return t[b0:b1, plan.x0 : plan.x0 + plan.nx * plan.Tx + 2 * self.r]


# ------------------------------------------------------------------------------------------------
# dropout masks and scratch buffers

_M32 = 0xFFFFFFFF
_MIX1, _MIX2 = 0x85EBCA6B, 0xC2B2AE35


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def dropout_params(p: float, seed: int | None, cid: int) -> tuple[int, int, int, int]:
    """``(threshold, key0, key1, on)`` of chunk ``cid``'s dropout masks (``on = 0``: no dropout).

    Element ``n`` of the chunk's virtual ``(pixels, Gq, H, Gk, Kx, Ky)`` mask tensor is kept iff the
    16-bit half ``n mod 2`` (low half first) of ``fmix(fmix(lo(n//2) ^ key0) ^ (hi(n//2) + key1))``
    is ``>= threshold`` (``fmix``: MurmurHash3's 32-bit finaliser). The keep probability is
    ``1 − threshold / 2¹⁶`` (``p`` rounded to a multiple of 2⁻¹⁶), and any slice of the masks can be
    regenerated from its counters alone (the backward pass and the native kernels do)."""
    if p <= 0.0:
        return 0, 0, 0, 0
    k = _splitmix64((int(seed or 0) * 1000003 + cid) & 0xFFFFFFFFFFFFFFFF)
    thr = min(int(round(p * 65536.0)), 0xFFFF)
    return thr, k & _M32, k >> 32, 1


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """``h · c mod 2³²`` for int64 tensors holding uint32 values, without int64 overflow."""
    lo = (h & 0xFFFF) * c
    hi = (((h >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _fmix(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, _MIX1)
    h = h ^ (h >> 13)
    h = _mul32(h, _MIX2)
    return h ^ (h >> 16)


def _keep(ctr: torch.Tensor, params) -> torch.Tensor:
    thr, k0, k1, _ = params
    word = ctr >> 1
    h = _fmix((word & _M32) ^ k0)
    h = _fmix(h ^ (((word >> 32) + k1) & _M32))
    return ((h >> ((ctr & 1) * 16)) & 0xFFFF) >= thr


def keep_mask(params: tuple[int, int, int, int], start: int, shape, device) -> torch.Tensor:
    """Bool keep-mask for the counters ``start + arange(prod(shape))`` under :func:`dropout_params`
    ``params`` (the PyTorch reference of the native kernels' inline masks)."""
    n = math.prod(shape)
    return _keep(torch.arange(start, start + n, dtype=torch.int64, device=device), params).view(shape)


def _slice_mask(params, a: int, Gq: int, shape, device, out: torch.Tensor) -> torch.Tensor:
    """Float keep-mask of query element ``a`` for a ``(*PIX, H, Gk, Kx, Ky)`` slice, written into ``out``:
    counters ``(pixel · Gq + a) · H·Gk·K + inner`` of the chunk's ``(pixels, Gq, H, Gk, Kx, Ky)`` masks."""
    inner = math.prod(shape[-4:])
    npix = math.prod(shape[:-4])
    ctr = torch.arange(npix, dtype=torch.int64, device=device).mul_(Gq * inner).add_(a * inner)
    ctr = ctr[:, None] + torch.arange(inner, dtype=torch.int64, device=device)
    return out.copy_(_keep(ctr, params).view(shape))


_KEEP_BITS = 16
_hash_masks = {"on": 0}


@contextlib.contextmanager
def hash_masks():
    """Within this context the PyTorch path draws its dropout masks from the counter hash of the native
    kernels (:func:`keep_mask`), so both paths apply identical masks (tests compare them). Outside it,
    the PyTorch path uses :func:`dropout_keep_mask`, several times cheaper in PyTorch operations."""
    _hash_masks["on"] += 1
    try:
        yield
    finally:
        _hash_masks["on"] -= 1


def dropout_keep_mask(shape, p: float, generator: torch.Generator, device, dtype=torch.float32,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Float mask of 0/1, 1 with probability ``1 − p`` (``p`` rounded to a multiple of 2⁻¹⁶).

    Four 16-bit uniforms per 64-bit draw, thresholded arithmetically: on CPU several times cheaper
    than ``bernoulli_`` followed by a boolean multiply. Deterministic given ``generator``.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=generator)
    u = words.view(torch.int16)[:n].view(shape)
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=device)
    thr = round(p * (1 << _KEEP_BITS)) - (1 << (_KEEP_BITS - 1))  # keep iff u >= thr
    return out.copy_(u).sub_(thr - 1).clamp_(0, 1)


def _mask(spec: Spec, cid: int, a: int, Gq: int, shape, dtype, device, scratch: "_Scratch") -> torch.Tensor:
    """Dropout keep-mask of query element ``a`` of chunk ``cid`` (PyTorch path), regenerable in backward."""
    out = scratch.get("mask", shape, dtype, device)
    if _hash_masks["on"]:
        return _slice_mask(dropout_params(spec.dropout, spec.seed, cid), a, Gq, shape, device, out)
    g = torch.Generator(device=device)
    g.manual_seed((spec.seed * 1000003 + cid * 131 + a) % (2**63 - 1))
    return dropout_keep_mask(shape, spec.dropout, g, device, dtype, out=out)


class _Scratch:
    """Reusable buffers for one attention call (chunks mostly share shapes)."""

    def __init__(self):
        self._bufs: dict = {}

    def get(self, name, shape, dtype, device, zero=False):
        key = (name, tuple(shape), dtype, str(device))
        t = self._bufs.get(key)
        if t is None:
            t = (torch.zeros if zero else torch.empty)(shape, dtype=dtype, device=device)
            self._bufs[key] = t
        return t

    def clear(self):
        self._bufs.clear()


# ------------------------------------------------------------------------------------------------
# the chunk in no-grad arithmetic (forward, and recomputation in backward)


def _by_class(t: torch.Tensor, u_of_h: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Expand the class axis ``dim`` (size ``U``) to the ``|H|`` output elements."""
    if u_of_h is None:
        return t
    return t.index_select(dim, u_of_h)


def _sum_by_class(t: torch.Tensor, u_of_h: torch.Tensor | None, dim: int, U: int) -> torch.Tensor:
    """Adjoint of :func:`_by_class`: sum the ``|H|`` axis ``dim`` into its ``U`` classes (kept)."""
    if u_of_h is None:
        return t.sum(dim, keepdim=True)
    shape = list(t.shape)
    shape[dim] = U
    return t.new_zeros(shape).index_add_(dim, u_of_h, t)


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
        native.weights(Pn, E, Wv, spec.u_of_h, dropout_params(spec.dropout, spec.seed, cid),
                       1.0 / (1.0 - spec.dropout))
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


# ------------------------------------------------------------------------------------------------
# the chunk's backward


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
    Gq = Pn.shape[-4]
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
    # ---- one pass over a_q: rebuild W = Σ_a Pn ⊗ E ⊙ D (each dropout mask generated once) and
    #      push dW through it: X_a = dW ⊙ D_a, dPn[a] = Σ_{a_k} X_a ⊙ E[a], dE[a] = Σ_{h∈u} X_a ⊙ Pn[a]
    W = torch.empty(shape, dtype=ct, device=dev)
    dPn = torch.empty_like(Pn)
    dE = None if E is None else torch.empty_like(E)
    tmp = scratch.get("prod", shape, ct, dev)
    prod = scratch.get("prod2", shape, ct, dev) if (drop and E is not None) else None
    for a in range(Gq):
        Pa = Pn.select(-4, a).unsqueeze(-3)  # (*PIX, H, 1, Kx, Ky)
        Ea = None if E is None else _by_class(E.select(-5, a), u_of_h, -4)
        mask = None
        if drop:
            mask = _mask(spec, cid, a, Gq, shape, ct, dev, scratch)
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
    # ---- value side: o = agg(W, v)
    Wb = plan.band_matrix(W.to(vt.dtype), scratch)
    del W
    _value_grads(Wb, dot, Gk, plan, grads)
    del Wb
    del dWc, tmp
    # ---- the two softmaxes
    g = (Pn * dPn).sum((-2, -1), keepdim=True)  # (*PIX, Gq, H, 1, 1)
    if E is None:
        dP = dPn.sub_(g).mul_(Pn)
        dT = _sum_by_class(dP, u_of_h, -3, U).unsqueeze(-3)  # (*PIX, Gq, U, 1, Kx, Ky)
    else:
        s2 = _sum_by_class(Pn * g, u_of_h, -3, U)  # (*PIX, Gq, U, Kx, Ky)
        dP = dPn.sub_(g).mul_(Pn)
        dT = dE.sub_(s2.unsqueeze(-3)).mul_(E)  # (*PIX, Gq, U, Gk, Kx, Ky)
        del s2, E
    del Pn, g
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
    native.backward(Pn, E, dW, Wv, dCv, dgt, spec.u_of_h, dropout_params(spec.dropout, spec.seed, cid),
                    1.0 / (1.0 - spec.dropout), dP, qp, tabT, dqp, dtabT)
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


def forward_chunks(q, kp, vp, table, gt, spec: Spec) -> torch.Tensor:
    """The output ``(Bn, X, Y, H, dv)`` of every chunk, without autograd (``kp/vp`` padded by :meth:`Spec.pad`)."""
    scratch = _Scratch()

    def one(cid, b0, b1, plan):
        gtc = None if gt is None else gt[b0:b1, plan.x0 : plan.x1]
        return chunk_forward(q[b0:b1, plan.x0 : plan.x1], spec.slab(kp, b0, b1, plan),
                             spec.slab(vp, b0, b1, plan), table, gtc, plan, spec, cid, scratch)

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
        gtc = None if gt is None else gt[b0:b1, plan.x0 : plan.x1]
        chunk_backward(q[b0:b1, plan.x0 : plan.x1], spec.slab(kp, b0, b1, plan), spec.slab(vp, b0, b1, plan),
                       table, gtc, plan, spec, cid, do[b0:b1, plan.x0 : plan.x1], grads, scratch)
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


# ------------------------------------------------------------------------------------------------
# the chunk in differentiable operations (torch.compile, recompute=False, reference)


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


def attend(q, kp, vp, table, gt, spec: Spec, *, training: bool, recompute: bool, compiled: bool):
    """Run all chunks. ``q (Bn, X, Y, Gq, d)``, ``kp/vp`` padded by :meth:`Spec.pad`."""
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, kp, vp, table, gt)
    )
    if needs_grad and recompute and not compiled:
        if spec.dropout > 0 and training:
            spec.seed = int(torch.randint(0, 2**62, (), device="cpu").item())
        elif not training:
            spec.dropout = 0.0
        return AttentionFunction.apply(q, kp, vp, table, gt, spec)
    if not needs_grad and not compiled:
        if spec.dropout > 0 and training:
            spec.seed = int(torch.randint(0, 2**62, (), device="cpu").item())
        else:
            spec.dropout = 0.0
        with torch.no_grad():
            return forward_chunks(q, kp, vp, table, gt, spec)
    # differentiable path (torch.compile traces this; also recompute=False)
    from torch.utils.checkpoint import checkpoint

    def one(cid, b0, b1, plan):
        gtc = None if gt is None else gt[b0:b1, plan.x0 : plan.x1]
        args = (q[b0:b1, plan.x0 : plan.x1], spec.slab(kp, b0, b1, plan), spec.slab(vp, b0, b1, plan), table, gtc,
                plan, spec, training)
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
