"""The original release's attention algorithm, re-created for side-by-side measurements.

The public GSA-Nets code computes local attention with ``unfold`` (``k²`` copies of keys and values),
materialises the full ``heads × |H| × pixels × |H| × k² × |H|`` score tensor from expanded copies
(content + row + column + group terms), masks it, applies softmax and dropout over it, and contracts
with the unfolded values, summing over the query group element inside the final ``einsum``. Its global
layers build the same tensor over all pixel pairs.

:func:`install` swaps this algorithm into the attention layers of a model (benchmarks only; it is
not part of the library). It computes the same function as the library's layers (checked against
the ``"dense"`` oracle in ``tests/benchmarks``), so its time and memory are the original's algorithmic
costs measured on the same machine, in the same run, with the same parameters.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from gsa.nn.attention import _GroupAttention

__all__ = ["install", "original_attend"]


def _unfold(t: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, n, X, Y, G, c)`` → ``(B, n, X, Y, k·k, G, c)`` (zero padded; ``k²`` copies)."""
    B, n, X, Y, G, c = t.shape
    r = k // 2
    flat = t.permute(0, 1, 4, 5, 2, 3).reshape(B, n * G * c, X, Y)
    cols = F.unfold(flat, kernel_size=k, padding=r)  # (B, n·G·c·k·k, X·Y)
    cols = cols.view(B, n, G, c, k * k, X, Y)
    return cols.permute(0, 1, 5, 6, 4, 2, 3)


def original_attend(layer: _GroupAttention, q, k, v):
    """``q, k, v (B, n, X, Y, G, d)`` (``q`` pre-scaled) → ``(B, n, X, Y, H, dv)``."""
    B, n, X, Y, Gq, d = q.shape
    Gk, H = k.shape[4], layer.group.order
    p = layer.row_dim + layer.col_dim
    coords = layer._acted_coords(X, Y, q.device)  # (H, R, 2)
    table = layer._encode(coords, q.dtype)  # (H, R, p)
    if layer.patch_size is not None:
        ks = layer.patch_size
        K = ks * ks
        kl = _unfold(k, ks)  # (B, n, X, Y, K, Gk, d)   k² copies
        vl = _unfold(v, ks)
        content = torch.einsum("bnxyqc,bnxykgc->bnxyqkg", q, kl)
        pos = torch.einsum("bnxyqc,hkc->bnhxyqk", q[..., :p], table)  # (B, n, H, X, Y, Gq, K)
        scores = pos.unsqueeze(-1).expand(B, n, H, X, Y, Gq, K, Gk)
        if not layer.lifting:
            E = layer.group_embedding.weight[layer.group_index]  # (H, Gq, Gk, g)
            grp = torch.einsum("bnxyqc,hqgc->bnhxyqg", q[..., p:], E)
            scores = scores + grp.unsqueeze(-2)
        scores = scores + content.unsqueeze(2).expand_as(scores)
        r = ks // 2
        ones = torch.ones(1, 1, X, Y, device=q.device, dtype=q.dtype)
        inside = F.unfold(ones, ks, padding=r).view(K, X, Y).permute(1, 2, 0)  # (X, Y, K)
        scores = scores - torch.where(inside > 0, 0.0, float("inf")).to(q.dtype)[:, :, None, :, None]
        shape = scores.shape
        probs = torch.softmax(scores.reshape(*shape[:-2], K * Gk), -1).view(shape)
        probs = layer.attention_dropout(probs)
        out = torch.einsum("bnhxyqkg,bnxykgc->bnxyhc", probs, vl)
        return out
    # global: all pairs (this is what the dense oracle does)
    return layer._attend_dense(q, k, v)


def install(model: torch.nn.Module) -> int:
    """Make every attention layer of ``model`` use :func:`original_attend` for ``backend="fast"``."""
    count = 0
    for m in model.modules():
        if isinstance(m, _GroupAttention):
            m._attend_fast = types.MethodType(original_attend, m)
            m.backend = "fast"
            count += 1
    return count
