"""The original release's attention algorithm, re-created for side-by-side measurements.

The public GSA-Nets code computes local attention with ``unfold`` (``k²`` copies of keys and values),
materialises the full ``heads × |H| × pixels × |H| × k² × |H|`` score tensor from expanded copies
(content + row + column + group terms), masks it, applies softmax and dropout over it, and contracts
with the unfolded values, summing over the query group element inside the final ``einsum``. Its global
layers build the same tensor over all pixel pairs.

It is registered as the attention backend ``"original"`` (:func:`gsa.nn.backends.register`) when this
module is imported; :func:`install` selects it in every attention layer of a model (benchmarks only;
it is not part of the library). It computes the same function as the library's layers (checked against
the ``"dense"`` oracle in ``tests/benchmarks``), so its time and memory are the original's algorithmic
costs measured on the same machine, in the same run, with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gsa.nn import GroupSelfAttention, LiftingSelfAttention, backends
from gsa.nn.backends import AttentionCall, reference

__all__ = ["BACKEND", "install", "original_attend"]


def _unfold(t: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, X, Y, G, c)`` → ``(B, X, Y, k·k, G, c)`` (zero padded; ``k²`` copies)."""
    B, X, Y, G, c = t.shape
    r = k // 2
    flat = t.permute(0, 3, 4, 1, 2).reshape(B, G * c, X, Y)
    cols = F.unfold(flat, kernel_size=k, padding=r)  # (B, G·c·k·k, X·Y)
    return cols.view(B, G, c, k * k, X, Y).permute(0, 4, 5, 3, 1, 2)


def original_attend(call: AttentionCall) -> torch.Tensor:
    """The original algorithm on a :class:`~gsa.nn.backends.AttentionCall`: ``(B, X, Y, |H|, dv)``."""
    if call.patch_size is None:  # global: all pairs (this is what the dense oracle does)
        return reference.attend(call)
    q, table = call.q, call.table
    B, X, Y, Gq, _ = q.shape
    Gk, H, p = call.k.shape[3], call.order, table.shape[-1]
    ks = call.patch_size
    K = ks * ks
    kl = _unfold(call.k, ks)  # (B, X, Y, K, Gk, d)   k² copies
    vl = _unfold(call.v, ks)
    content = torch.einsum("bxyqc,bxykgc->bxyqkg", q, kl)
    pos = torch.einsum("bxyqc,hkc->bhxyqk", q[..., :p], table)  # (B, H, X, Y, Gq, K)
    scores = pos.unsqueeze(-1).expand(B, H, X, Y, Gq, K, Gk)
    if call.group_scores is not None:
        gs = call.group_scores
        if call.classes is not None:
            gs = gs.index_select(4, call.classes.to(q.device))
        scores = scores + gs.expand(B, X, Y, Gq, H, Gk).permute(0, 4, 1, 2, 3, 5).unsqueeze(-2)
    scores = scores + content.unsqueeze(1).expand_as(scores)
    ones = torch.ones(1, 1, X, Y, device=q.device, dtype=q.dtype)
    inside = F.unfold(ones, ks, padding=ks // 2).view(K, X, Y).permute(1, 2, 0)  # (X, Y, K)
    scores = scores - torch.where(inside > 0, 0.0, float("inf")).to(q.dtype)[:, :, None, :, None]
    shape = scores.shape
    probs = torch.softmax(scores.reshape(*shape[:-2], K * Gk), -1).view(shape)
    if call.dropout > 0:
        probs = F.dropout(probs, call.dropout, training=True)
    return torch.einsum("bhxyqkg,bxykgc->bxyhc", probs, vl)


class _Original:
    name = "original"
    description = "the original release's algorithm (unfold, full score tensor); benchmarks only"
    auto_devices: tuple[str, ...] = ()

    def why_not(self, call: AttentionCall) -> str | None:
        """Runs anywhere."""
        return None

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`original_attend`."""
        return original_attend(call)


BACKEND = _Original()
backends.register(BACKEND)


def install(model: torch.nn.Module) -> int:
    """Make every attention layer of ``model`` use the ``"original"`` backend; returns how many."""
    count = 0
    for m in model.modules():
        if isinstance(m, (LiftingSelfAttention, GroupSelfAttention)):
            m.backend = "original"
            count += 1
    return count
