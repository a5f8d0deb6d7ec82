"""The dense reference backend (the oracle): every query/key pair, one softmax, autograd.

For all pixel pairs ``(i, j)`` it looks up the positional encoding of the offset ``x_j − x_i`` in the
table (pairs whose offset is not in the neighbourhood are masked), adds content, positional and group
scores into the full ``(B, |H|, N, Gq, N, Gk)`` tensor, takes one softmax over ``(j, a_k)`` and sums
over ``a_q`` (paper Eqs. 13–16; the group term indexed as gsa corrects it). Memory ``O(N²)``: for tests
and small inputs. Every other backend is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import AttentionCall

__all__ = ["BACKEND", "attend", "pair_index"]


def pair_index(offsets: torch.Tensor, X: int, Y: int) -> torch.Tensor:
    """``(N, N)`` long: the row of ``offsets (R, 2)`` equal to ``x_j − x_i`` for each pixel pair, or −1."""
    lut = torch.full((2 * X - 1, 2 * Y - 1), -1, dtype=torch.long)
    inside = (offsets[:, 0].abs() < X) & (offsets[:, 1].abs() < Y)
    rows = torch.arange(offsets.shape[0])[inside]
    lut[offsets[inside, 0] + X - 1, offsets[inside, 1] + Y - 1] = rows
    px = torch.arange(X).repeat_interleave(Y)
    py = torch.arange(Y).repeat(X)
    return lut[px[None, :] - px[:, None] + X - 1, py[None, :] - py[:, None] + Y - 1]


def _softmax(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; half precision is computed in float32."""
    if s.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(s.float(), dim=-1).to(s.dtype)
    return torch.softmax(s, dim=-1)


def attend(call: AttentionCall) -> torch.Tensor:
    """``(B, X, Y, |H|, dv)``: all pairs, encodings looked up per pair."""
    q, k, v, table = call.q, call.k, call.v, call.table
    B, X, Y, Gq, _ = q.shape
    Gk, H, N, p = k.shape[3], call.order, X * Y, table.shape[-1]
    idx = pair_index(call.neighbourhood.offsets(X, Y), X, Y).to(q.device)
    rho = table[:, idx.clamp_min(0)]  # (H, N, N, p)
    qf, kf, vf = q.reshape(B, N, Gq, -1), k.reshape(B, N, Gk, -1), v.reshape(B, N, Gk, -1)
    scores = torch.einsum("biqc,bjkc->biqjk", qf, kf)[:, None].expand(B, H, N, Gq, N, Gk)
    scores = scores + torch.einsum("biqc,hijc->bhiqj", qf[..., :p], rho)[..., None]
    if call.group_scores is not None:
        gs = call.group_scores.reshape(B, N, Gq, -1, Gk)
        gs = gs if call.classes is None else gs.index_select(3, call.classes.to(q.device))
        scores = scores + gs.permute(0, 3, 1, 2, 4)[:, :, :, :, None, :]  # (B, H, N, Gq, 1, Gk)
    scores = scores.masked_fill((idx < 0)[None, None, :, None, :, None], float("-inf"))
    probs = _softmax(scores.flatten(-2)).view(scores.shape)
    if call.dropout > 0:
        probs = F.dropout(probs, call.dropout, training=True)
    o = torch.einsum("bhiqjk,bjkc->bihc", probs, vf)
    return o.reshape(B, X, Y, H, -1)


class _Reference:
    name = "reference"
    description = "dense oracle: all pixel pairs, one softmax, autograd; O(N²) memory"
    auto_devices: tuple[str, ...] = ()

    def why_not(self, call: AttentionCall) -> str | None:
        """Runs anywhere."""
        return None

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`attend`."""
        return attend(call)


BACKEND = _Reference()
