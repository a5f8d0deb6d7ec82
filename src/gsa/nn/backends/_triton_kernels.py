"""The Triton kernels of the ``"triton"`` backend (imported only when that backend runs).

Rows are query tokens ``(pixel i, query element a_q)`` (row ``i·Gq + a_q``), columns key tokens
``(pixel j, key element a_k)`` (column ``j·Gk + a_k``); one output element ``h`` at a time. The score
of a row/column pair is ``q·k + q[:p]·table[h, offset(j − i)] + group_scores[i, a_q, u(h), a_k]``
(``−inf`` outside the window); its softmax over the columns is the reference's one softmax over
``(j, a_k)``, i.e. both levels of the factorised core's softmax at once. Every kernel recomputes its
score tiles in :func:`_tile`; accumulation is in ``ACC`` (float32, or float64 for float64 inputs).
The compile-time constants stay separate ``tl.constexpr`` parameters: one constexpr ``NamedTuple``
would need a newer Triton than the ``[gpu]`` extra's ``triton>=3.0`` (3.2 cannot read its fields).

* :func:`fwd` — per (row block, batch, h): online softmax over the columns in the row block's
  window band, the value product, and the row's log-sum-exp for the backward pass.
* :func:`bwd_rows` — per (row block, batch): ``dq`` (content and positional), the group-score
  gradient per class, and the table gradient (atomic adds).
* :func:`bwd_cols` — per (column block, batch): ``dk`` and ``dv``.

Dropout: the counter-based hash of :mod:`gsa.nn.masks`, with the counters the chunked core gives
the same element (chunk id, pixel index inside the chunk's tile layout, then
``(a_q, h, a_k, slot)``), so a seed gives the same masks as the CPU kernels.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _fmix(h):
    """MurmurHash3's 32-bit finaliser (uint32 in, uint32 out)."""
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _row_drop(
    seed_ptr, b, rows, X: tl.constexpr, Y: tl.constexpr, Gq: tl.constexpr, B, LOCAL: tl.constexpr,
    CROWS: tl.constexpr, CB: tl.constexpr, TX: tl.constexpr, TY: tl.constexpr,
):  # fmt: skip
    """Per row: the chunk's hash keys ``(k0, k1)`` and ``pixel_in_chunk · Gq + a_q`` (int64)."""
    i = rows // Gq
    a = rows % Gq
    xi = i // Y
    yi = i % Y
    xb = xi // CROWS
    x0 = xb * CROWS
    xc = tl.minimum(x0 + CROWS, X) - x0
    bb = b // CB
    nbb = (B + CB - 1) // CB
    cid = (xb * nbb + bb).to(tl.uint64)
    lx = xi - x0
    bl = (b - bb * CB).to(tl.int64)
    if LOCAL:
        nx = (xc + TX - 1) // TX
        ny: tl.constexpr = (Y + TY - 1) // TY
        pix = (((bl * nx + lx // TX) * ny + yi // TY) * TX + lx % TX) * TY + yi % TY
    else:
        pix = (bl * xc + lx) * Y + yi
    s = tl.load(seed_ptr).to(tl.uint64)
    x = s * 1000003 + cid
    x = x + 0x9E3779B97F4A7C15
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    x = x ^ (x >> 31)
    k0 = (x & 0xFFFFFFFF).to(tl.uint32)
    k1 = (x >> 32).to(tl.uint32)
    return k0, k1, pix * Gq + a


@triton.jit
def _keep(k0, k1, base, h, ak, kx, ky, thr, H: tl.constexpr, Gk: tl.constexpr, KX: tl.constexpr, KY: tl.constexpr):
    """Keep-mask of the tile: counter ``((base·H + h)·Gk + a_k)·KX·KY + kx·KY + ky`` hashed as in
    :func:`gsa.nn.masks.keep_mask`."""
    n = ((base[:, None] * H + h) * Gk + ak[None, :]) * (KX * KY) + kx * KY + ky
    w = n.to(tl.uint64) >> 1
    lo = (w & 0xFFFFFFFF).to(tl.uint32)
    hi = (w >> 32).to(tl.uint32)
    hsh = _fmix(_fmix(lo ^ k0[:, None]) ^ (hi + k1[:, None]))
    half = (hsh >> ((n & 1) * 16).to(tl.uint32)) & 0xFFFF
    return half.to(tl.int32) >= thr


@triton.jit
def _tile(
    q_ptr, k_ptr, tab_ptr, gs_ptr, b, h, u, rows, cols, d, X: tl.constexpr, Y: tl.constexpr, Gq: tl.constexpr,
    Gk: tl.constexpr, P: tl.constexpr, U: tl.constexpr, LOCAL: tl.constexpr, RAD: tl.constexpr, R: tl.constexpr,
    KX: tl.constexpr, KY: tl.constexpr, HAS_GS: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Scores ``(BM, BN)`` of rows × columns for element ``h`` (class ``u``), ``−inf`` where invalid;
    also the validity mask, the table row of each pair, the query and key tiles and the slot axes."""
    N: tl.constexpr = X * Y
    rmask = rows < N * Gq
    cmask = cols < N * Gk
    i = rows // Gq
    j = cols // Gk
    ak = cols % Gk
    dx = (j // Y)[None, :] - (i // Y)[:, None]
    dy = (j % Y)[None, :] - (i % Y)[:, None]
    valid = rmask[:, None] & cmask[None, :]
    if LOCAL:
        valid = valid & (dx <= RAD) & (dx >= -RAD) & (dy <= RAD) & (dy >= -RAD)
        ridx = (dx + RAD) * (2 * RAD + 1) + (dy + RAD)
        kx = dx + RAD
        ky = dy + RAD
    else:
        ridx = (dx + X - 1) * (2 * Y - 1) + (dy + Y - 1)
        kx = (j // Y)[None, :] + 0 * dx
        ky = (j % Y)[None, :] + 0 * dy
    ridx = tl.where(valid, ridx, 0)
    bq = b.to(tl.int64) * (N * Gq)
    bk = b.to(tl.int64) * (N * Gk)
    dc = tl.arange(0, BD)
    qb = tl.load(q_ptr + (bq + rows[:, None]) * d + dc[None, :], mask=rmask[:, None] & (dc[None, :] < d), other=0.0)
    kb = tl.load(k_ptr + (bk + cols[:, None]) * d + dc[None, :], mask=cmask[:, None] & (dc[None, :] < d), other=0.0)
    qb = qb.to(ACC)
    kb = kb.to(ACC)
    s = tl.dot(qb, tl.trans(kb), input_precision="ieee", out_dtype=ACC)
    for c in tl.static_range(P):
        qc = tl.load(q_ptr + (bq + rows) * d + c, mask=rmask, other=0.0).to(ACC)
        tc = tl.load(tab_ptr + (h * R + ridx) * P + c, mask=valid, other=0.0).to(ACC)
        s += qc[:, None] * tc
    if HAS_GS:
        g = tl.load(gs_ptr + ((bq + rows[:, None]) * U + u) * Gk + ak[None, :], mask=valid, other=0.0)
        s += g.to(ACC)
    s = tl.where(valid, s, float("-inf"))
    return s, valid, ridx, qb, kb, ak, kx, ky


@triton.jit
def _v_tile(v_ptr, b, cols, dv, NK: tl.constexpr, BDV: tl.constexpr, ACC: tl.constexpr):
    """The values ``(BN, BDV)`` of the key tokens ``cols`` (``NK = N·Gk`` of them; zeros outside) and
    their mask."""
    dvc = tl.arange(0, BDV)
    vmask = (cols < NK)[:, None] & (dvc[None, :] < dv)
    vb = tl.load(v_ptr + (b.to(tl.int64) * NK + cols[:, None]) * dv + dvc[None, :], mask=vmask, other=0.0)
    return vb.to(ACC), vmask


@triton.jit
def _row_state(
    lse_ptr, delta_ptr, do_ptr, b, h, rows, dv, N: tl.constexpr, Gq: tl.constexpr, H: tl.constexpr,
    BDV: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """The backward's inputs of the rows for element ``h``: log-sum-exp and ``delta`` ``(BM,)``, and
    the output gradient ``(BM, BDV)`` of each row's pixel."""
    rmask = rows < N * Gq
    lrow = (b.to(tl.int64) * H + h) * (N * Gq) + rows
    lse = tl.load(lse_ptr + lrow, mask=rmask, other=0.0)
    delta = tl.load(delta_ptr + lrow, mask=rmask, other=0.0)
    dvc = tl.arange(0, BDV)
    do_rows = (b.to(tl.int64) * N + rows // Gq) * H + h
    dmask = rmask[:, None] & (dvc[None, :] < dv)
    dob = tl.load(do_ptr + do_rows[:, None] * dv + dvc[None, :], mask=dmask, other=0.0)
    return lse, delta, dob.to(ACC)


@triton.jit
def _band(
    blk, BLOCK: tl.constexpr, G_own: tl.constexpr, G_other: tl.constexpr, X: tl.constexpr, Y: tl.constexpr,
    LOCAL: tl.constexpr, RAD: tl.constexpr,
):  # fmt: skip
    """``[start, end)`` of the other side's tokens that tokens ``blk·BLOCK …`` can meet (window rows)."""
    if LOCAL:
        t0 = blk * BLOCK
        t1 = tl.minimum(t0 + BLOCK, X * Y * G_own) - 1
        x_lo = tl.maximum((t0 // G_own) // Y - RAD, 0)
        x_hi = tl.minimum((t1 // G_own) // Y + RAD, X - 1)
        return x_lo * (Y * G_other), (x_hi + 1) * (Y * G_other)
    else:
        return blk * 0, blk * 0 + X * Y * G_other


@triton.jit
def fwd(
    q_ptr, k_ptr, v_ptr, tab_ptr, gs_ptr, cls_ptr, seed_ptr, o_ptr, lse_ptr, B, d, dv, thr, scale, X: tl.constexpr,
    Y: tl.constexpr, Gq: tl.constexpr, Gk: tl.constexpr, H: tl.constexpr, P: tl.constexpr, U: tl.constexpr,
    LOCAL: tl.constexpr, RAD: tl.constexpr, R: tl.constexpr, KX: tl.constexpr, KY: tl.constexpr,
    HAS_GS: tl.constexpr, DROP: tl.constexpr, CROWS: tl.constexpr, CB: tl.constexpr, TX: tl.constexpr,
    TY: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Row outputs ``o (B, N·Gq, H, dv)`` (before the sum over ``a_q``) and ``lse (B, H, N·Gq)``."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    N: tl.constexpr = X * Y
    u = tl.load(cls_ptr + h)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < N * Gq
    c_start, c_end = _band(pid, BM, Gq, Gk, X, Y, LOCAL, RAD)
    if DROP:
        k0, k1, base = _row_drop(seed_ptr, b, rows, X, Y, Gq, B, LOCAL, CROWS, CB, TX, TY)
    m = tl.full((BM,), float("-inf"), ACC)
    den = tl.zeros((BM,), ACC)
    acc = tl.zeros((BM, BDV), ACC)
    dvc = tl.arange(0, BDV)
    for c0 in range(c_start, c_end, BN):
        cols = c0 + tl.arange(0, BN)
        s, valid, ridx, qb, kb, ak, kx, ky = _tile(
            q_ptr, k_ptr, tab_ptr, gs_ptr, b, h, u, rows, cols, d, X, Y, Gq, Gk, P, U, LOCAL, RAD, R, KX, KY,
            HAS_GS, BD, ACC,
        )  # fmt: skip
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        p = tl.exp(s - m_safe[:, None])
        den = den * alpha + tl.sum(p, 1)
        if DROP:
            keep = _keep(k0, k1, base, h, ak, kx, ky, thr, H, Gk, KX, KY)
            p = tl.where(keep, p * scale, 0.0)
        vb, _ = _v_tile(v_ptr, b, cols, dv, N * Gk, BDV, ACC)
        acc = acc * alpha[:, None] + tl.dot(p, vb, input_precision="ieee", out_dtype=ACC)
        m = m_new
    den = tl.where(rmask, den, 1.0)
    o = acc / den[:, None]
    bq = b.to(tl.int64) * (N * Gq)
    omask = rmask[:, None] & (dvc[None, :] < dv)
    tl.store(o_ptr + ((bq + rows[:, None]) * H + h) * dv + dvc[None, :], o, mask=omask)
    tl.store(lse_ptr + (b.to(tl.int64) * H + h) * (N * Gq) + rows, m + tl.log(den), mask=rmask)


@triton.jit
def _row_grads_h(
    q_ptr, k_ptr, v_ptr, tab_ptr, gs_ptr, seed_ptr, do_ptr, lse_ptr, delta_ptr, dtab_ptr, b, h, u, rows, dq, dg,
    c_start, c_end, B, d, dv, thr, scale, X: tl.constexpr, Y: tl.constexpr, Gq: tl.constexpr, Gk: tl.constexpr,
    H: tl.constexpr, P: tl.constexpr, U: tl.constexpr, LOCAL: tl.constexpr, RAD: tl.constexpr, R: tl.constexpr,
    KX: tl.constexpr, KY: tl.constexpr, HAS_GS: tl.constexpr, DROP: tl.constexpr, CROWS: tl.constexpr,
    CB: tl.constexpr, TX: tl.constexpr, TY: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    BG: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """:func:`bwd_rows` for one output element ``h``: ``(dq, dg)`` with its contributions added."""
    N: tl.constexpr = X * Y
    rmask = rows < N * Gq
    bq = b.to(tl.int64) * (N * Gq)
    lse, delta, dob = _row_state(lse_ptr, delta_ptr, do_ptr, b, h, rows, dv, N, Gq, H, BDV, ACC)
    dc = tl.arange(0, BD)
    gc = tl.arange(0, BG)
    if DROP:
        k0, k1, base = _row_drop(seed_ptr, b, rows, X, Y, Gq, B, LOCAL, CROWS, CB, TX, TY)
    for c0 in range(c_start, c_end, BN):
        cols = c0 + tl.arange(0, BN)
        s, valid, ridx, qb, kb, ak, kx, ky = _tile(
            q_ptr, k_ptr, tab_ptr, gs_ptr, b, h, u, rows, cols, d, X, Y, Gq, Gk, P, U, LOCAL, RAD, R, KX, KY,
            HAS_GS, BD, ACC,
        )  # fmt: skip
        p = tl.exp(s - lse[:, None])
        vb, _ = _v_tile(v_ptr, b, cols, dv, N * Gk, BDV, ACC)
        dp = tl.dot(dob, tl.trans(vb), input_precision="ieee", out_dtype=ACC)
        if DROP:
            keep = _keep(k0, k1, base, h, ak, kx, ky, thr, H, Gk, KX, KY)
            dp = tl.where(keep, dp * scale, 0.0)
        ds = tl.where(valid, p * (dp - delta[:, None]), 0.0)
        dq += tl.dot(ds, kb, input_precision="ieee", out_dtype=ACC)
        for c in tl.static_range(P):
            tc = tl.load(tab_ptr + (h * R + ridx) * P + c, mask=valid, other=0.0).to(ACC)
            dq += tl.where(dc[None, :] == c, tl.sum(ds * tc, 1)[:, None], 0.0)
            qc = tl.load(q_ptr + (bq + rows) * d + c, mask=rmask, other=0.0).to(ACC)
            tl.atomic_add(dtab_ptr + (h * R + ridx) * P + c, ds * qc[:, None], mask=valid)
        if HAS_GS:
            for g in tl.static_range(Gk):
                sg = tl.sum(tl.where(ak[None, :] == g, ds, 0.0), 1)
                dg += tl.where(gc[None, :] == g, sg[:, None], 0.0)
    return dq, dg


@triton.jit
def bwd_rows(
    q_ptr, k_ptr, v_ptr, tab_ptr, gs_ptr, hs_ptr, ustart_ptr, seed_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    dtab_ptr, dgs_ptr, B, d, dv, thr, scale, X: tl.constexpr, Y: tl.constexpr, Gq: tl.constexpr, Gk: tl.constexpr,
    H: tl.constexpr, P: tl.constexpr, U: tl.constexpr, LOCAL: tl.constexpr, RAD: tl.constexpr, R: tl.constexpr,
    KX: tl.constexpr, KY: tl.constexpr, HAS_GS: tl.constexpr, DROP: tl.constexpr, CROWS: tl.constexpr,
    CB: tl.constexpr, TX: tl.constexpr, TY: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    BDV: tl.constexpr, BG: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """``dq (B, N·Gq, d)``, ``dgs (B, N·Gq, U, Gk)`` (written) and ``dtab (H, R, p)`` (added to).

    Output elements are visited class by class (``hs``: the ``h`` sorted by class, ``ustart``: where
    each class begins), so each class's group-score gradient is summed in registers."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    N: tl.constexpr = X * Y
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < N * Gq
    c_start, c_end = _band(pid, BM, Gq, Gk, X, Y, LOCAL, RAD)
    dq = tl.zeros((BM, BD), ACC)
    bq = b.to(tl.int64) * (N * Gq)
    gc = tl.arange(0, BG)
    for u in range(U):
        dg = tl.zeros((BM, BG), ACC)
        t0 = tl.load(ustart_ptr + u)
        t1 = tl.load(ustart_ptr + u + 1)
        for t in range(t0, t1):
            h = tl.load(hs_ptr + t)
            dq, dg = _row_grads_h(
                q_ptr, k_ptr, v_ptr, tab_ptr, gs_ptr, seed_ptr, do_ptr, lse_ptr, delta_ptr, dtab_ptr, b, h, u, rows,
                dq, dg, c_start, c_end, B, d, dv, thr, scale, X, Y, Gq, Gk, H, P, U, LOCAL, RAD, R, KX, KY, HAS_GS,
                DROP, CROWS, CB, TX, TY, BN, BD, BDV, BG, ACC,
            )  # fmt: skip
        if HAS_GS:
            gmask = rmask[:, None] & (gc[None, :] < Gk)
            tl.store(dgs_ptr + ((bq + rows[:, None]) * U + u) * Gk + gc[None, :], dg, mask=gmask)
    dc = tl.arange(0, BD)
    tl.store(dq_ptr + (bq + rows[:, None]) * d + dc[None, :], dq, mask=rmask[:, None] & (dc[None, :] < d))


@triton.jit
def bwd_cols(
    q_ptr, k_ptr, v_ptr, tab_ptr, gs_ptr, cls_ptr, seed_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, B, d, dv,
    thr, scale, X: tl.constexpr, Y: tl.constexpr, Gq: tl.constexpr, Gk: tl.constexpr, H: tl.constexpr,
    P: tl.constexpr, U: tl.constexpr, LOCAL: tl.constexpr, RAD: tl.constexpr, R: tl.constexpr, KX: tl.constexpr,
    KY: tl.constexpr, HAS_GS: tl.constexpr, DROP: tl.constexpr, CROWS: tl.constexpr, CB: tl.constexpr,
    TX: tl.constexpr, TY: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    """``dk (B, N·Gk, d)`` and ``dv (B, N·Gk, dv)``, per column block."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    N: tl.constexpr = X * Y
    cols = pid * BN + tl.arange(0, BN)
    cmask = cols < N * Gk
    r_start, r_end = _band(pid, BN, Gk, Gq, X, Y, LOCAL, RAD)
    dvc = tl.arange(0, BDV)
    dc = tl.arange(0, BD)
    bk = b.to(tl.int64) * (N * Gk)
    vb, vmask = _v_tile(v_ptr, b, cols, dv, N * Gk, BDV, ACC)
    dk = tl.zeros((BN, BD), ACC)
    dvv = tl.zeros((BN, BDV), ACC)
    for h in range(H):
        u = tl.load(cls_ptr + h)
        for r0 in range(r_start, r_end, BM):
            rows = r0 + tl.arange(0, BM)
            s, valid, ridx, qb, kb, ak, kx, ky = _tile(
                q_ptr, k_ptr, tab_ptr, gs_ptr, b, h, u, rows, cols, d, X, Y, Gq, Gk, P, U, LOCAL, RAD, R, KX, KY,
                HAS_GS, BD, ACC,
            )  # fmt: skip
            lse, delta, dob = _row_state(lse_ptr, delta_ptr, do_ptr, b, h, rows, dv, N, Gq, H, BDV, ACC)
            p = tl.exp(s - lse[:, None])
            dp = tl.dot(dob, tl.trans(vb), input_precision="ieee", out_dtype=ACC)
            pd = p
            if DROP:
                k0, k1, base = _row_drop(seed_ptr, b, rows, X, Y, Gq, B, LOCAL, CROWS, CB, TX, TY)
                keep = _keep(k0, k1, base, h, ak, kx, ky, thr, H, Gk, KX, KY)
                pd = tl.where(keep, p * scale, 0.0)
                dp = tl.where(keep, dp * scale, 0.0)
            dvv += tl.dot(tl.trans(pd), dob, input_precision="ieee", out_dtype=ACC)
            ds = tl.where(valid, p * (dp - delta[:, None]), 0.0)
            dk += tl.dot(tl.trans(ds), qb, input_precision="ieee", out_dtype=ACC)
    tl.store(dk_ptr + (bk + cols[:, None]) * d + dc[None, :], dk, mask=cmask[:, None] & (dc[None, :] < d))
    tl.store(dv_ptr + (bk + cols[:, None]) * dv + dvc[None, :], dvv, mask=vmask)
