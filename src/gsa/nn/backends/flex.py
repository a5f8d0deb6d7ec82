"""Attention core on :func:`torch.nn.attention.flex_attention` (for CUDA).

Group self-attention is mapped onto one ordinary attention per (batch, head):

* query tokens are ``(pixel i, query element a_q, output element h)`` — the query vector of
  ``(i, a_q)`` repeated for every ``h`` (``|H|·|G_q|·N`` tokens);
* key/value tokens are ``(pixel j, key element a_k)`` (``|G_k|·N`` tokens);
* a ``score_mod`` adds the positional score ``q_pos·ρ_h(x_j − x_i)`` (computed once per query token
  and window slot, then looked up by slot) and the group score ``q_grp·E[h⁻¹ a_k a_q⁻¹ h]``
  (looked up by ``a_k``);
* for local attention a block mask restricts keys to the ``k×k`` window (``mask_mod`` also masks the
  slots outside the image).

The output of token ``(i, a_q, h)`` is then summed over ``a_q`` (Eq. 16). Head dimensions are
zero-padded to 16 (the kernel's minimum; dot products are unchanged).

FlexAttention has no attention dropout, and its CPU path has no backward: the backend runs where
no dropout is active (inference, or ``attention_dropout == 0``), on CUDA, or on the CPU without
gradients (unfused and slow there: ``"auto"`` picks it on CUDA only; tests use it on the CPU).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch
import torch.nn.functional as F

from . import AttentionCall

__all__ = ["BACKEND", "attend_flex", "attend"]


@functools.lru_cache(maxsize=None)
def _importable() -> bool:
    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    except ImportError:  # pragma: no cover - old torch
        return False


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


_MASKS: dict = {}


def _block_mask(local: bool, r: int, X: int, Y: int, Gq: int, H: int, Gk: int, Bn: int, device):
    if not local:
        return None
    from torch.nn.attention.flex_attention import create_block_mask

    key = (r, X, Y, Gq, H, Gk, str(device))
    if key not in _MASKS:
        per_q, N = Gq * H, X * Y

        def mask_mod(b, hh, qi, kj):
            i = qi // per_q
            j = kj // Gk
            xi, yi = i // Y, i % Y
            xj, yj = j // Y, j % Y
            return ((xj - xi).abs() <= r) & ((yj - yi).abs() <= r)

        _MASKS[key] = create_block_mask(mask_mod, None, None, N * per_q, N * Gk, device=device)
    return _MASKS[key]


def _pad16(t: torch.Tensor) -> torch.Tensor:
    d = t.shape[-1]
    want = max(16, 1 << (d - 1).bit_length())
    return F.pad(t, (0, want - d)) if want != d else t


def attend_flex(q, k, v, P, Gth, *, local: bool, r: int, X: int, Y: int, H: int, compiled: bool = True):
    """``q (Bn, X, Y, Gq, d)``, ``k/v (Bn, X, Y, Gk, ·)``, positional scores
    ``P (Bn, X, Y, Gq, H, K)`` (``K = k²`` slots for local, ``X·Y`` for global), group scores
    ``Gth (Bn, X, Y, Gq, H, Gk)`` or None → ``(Bn, X, Y, H, dv)``."""
    from torch.nn.attention.flex_attention import flex_attention

    Bn, _, _, Gq, d = q.shape
    Gk, dv = k.shape[3], v.shape[-1]
    N = X * Y
    K = P.shape[-1]
    k_size = 2 * r + 1
    per_q = Gq * H
    Q = q.unsqueeze(4).expand(Bn, X, Y, Gq, H, d).reshape(1, Bn, N * per_q, d)
    Kt = k.reshape(1, Bn, N * Gk, d)
    V = v.reshape(1, Bn, N * Gk, dv)
    Q, Kt, V = _pad16(Q), _pad16(Kt), _pad16(V)
    Pf = P.reshape(Bn, N * per_q, K)
    Gf = None if Gth is None else Gth.reshape(Bn, N * per_q, Gk)

    def score_mod(score, b, hh, qi, kj):
        i = qi // per_q
        j = kj // Gk
        if local:
            xi, yi = i // Y, i % Y
            xj, yj = j // Y, j % Y
            dx = (xj - xi + r).clamp(0, k_size - 1)
            dy = (yj - yi + r).clamp(0, k_size - 1)
            slot = dx * k_size + dy
        else:
            slot = j
        score = score + Pf[hh, qi, slot]
        if Gf is not None:
            score = score + Gf[hh, qi, kj % Gk]
        return score

    mask = _block_mask(local, r, X, Y, Gq, H, Gk, Bn, q.device)
    if compiled:
        o = _compiled_flex()(Q, Kt, V, score_mod=score_mod, block_mask=mask, scale=1.0)  # (1, Bn, N·Gq·H, dv')
    else:
        with warnings.catch_warnings():  # unfused on purpose (the CPU path, or eager checks)
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            o = flex_attention(Q, Kt, V, score_mod=score_mod, block_mask=mask, scale=1.0)
    o = o[..., :dv].reshape(Bn, X, Y, Gq, H, dv)
    return o.sum(3)


def attend(call: AttentionCall) -> torch.Tensor:
    """``(B, X, Y, |H|, dv)``: positional scores per slot and group scores per ``h`` precomputed, the
    softmax and the value sum in one :func:`attend_flex` call."""
    q, table = call.q, call.table
    B, X, Y, Gq, _ = q.shape
    Gk, H, p = call.k.shape[3], call.order, table.shape[-1]
    nb = call.neighbourhood
    local = call.patch_size is not None
    if local:
        P = (q[..., :p] @ table.reshape(-1, p).t()).unflatten(-1, (H, -1))  # (B, X, Y, Gq, H, k²)
    else:
        P = nb.plan(X, Y, 0, X, Gq, Gk, H).positional(q[..., :p], table).reshape(B, X, Y, Gq, H, X * Y)
    gt = call.group_scores
    if gt is not None:
        classes = call.classes if call.classes is not None else torch.zeros(H, dtype=torch.long)
        gt = gt.index_select(4, classes.to(q.device))  # (B, X, Y, Gq, H, Gk)
    return attend_flex(q, call.k, call.v, P, gt, local=local, r=nb.r if local else 0, X=X, Y=Y, H=H, compiled=q.is_cuda)


class _Flex:
    name = "flex"
    description = "torch.nn.attention.flex_attention (CUDA; CPU without gradients); no attention dropout"
    auto_devices = ("cuda",)

    def why_not(self, call: AttentionCall) -> str | None:
        """No dropout; on the CPU, no gradients (FlexAttention has no CPU backward)."""
        if not _importable():  # pragma: no cover - old torch
            return "torch.nn.attention.flex_attention is not available in this PyTorch"
        if call.dropout > 0:
            return "FlexAttention has no attention dropout"
        if call.q.device.type != "cuda" and call.needs_grad:
            return "FlexAttention has no backward pass on the CPU"
        if call.q.device.type not in ("cuda", "cpu"):
            return f"FlexAttention does not run on {call.q.device.type}"
        return None

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`attend`."""
        return attend(call)


BACKEND = _Flex()
