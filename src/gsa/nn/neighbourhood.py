"""Neighbourhoods: which key pixels a query pixel attends to.

Local (``k×k`` window) and global (whole image) attention differ only here. A neighbourhood
provides the relative offsets whose positional encodings are tabulated, and the three
neighbourhood-dependent steps of the fast attention core: content scores, gathering positional
scores, and aggregating values. Shapes (channels last, ``n`` heads):

* queries ``q``: ``(B, n, xc, Y, Gq, d)`` — a chunk of ``xc`` query rows starting at row ``x0``;
* keys/values ``k, v``: ``(B, n, X, Y, Gk, d)`` (local: zero-padded by ``r`` on both spatial axes);
* scores: ``(B, n, xc, Y, H, Gq, K, Gk)`` with ``K`` key slots per query pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Neighbourhood", "Local", "Global", "make"]


class Neighbourhood:
    """Base class; see :class:`Local` and :class:`Global`."""

    def offsets(self, X: int, Y: int) -> torch.Tensor:
        """``(R, 2)`` integer ``(row, col)`` offsets whose encodings are tabulated."""
        raise NotImplementedError

    def scale(self, X: int, Y: int) -> float:
        """Offsets are divided by this so that they lie in ``[-1, 1]``."""
        raise NotImplementedError

    def pair_mask(self, X: int, Y: int, device=None) -> torch.Tensor | None:
        """``(N, N)`` bool, True where query ``i`` may attend to key ``j`` (None: all)."""
        raise NotImplementedError


class Local(Neighbourhood):
    """The ``k×k`` window centred on each query; keys outside the image are masked out."""

    def __init__(self, patch_size: int):
        self.k = int(patch_size)
        self.r = self.k // 2
        d = torch.arange(-self.r, self.r + 1)
        self._offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).reshape(-1, 2)
        self._masks: dict = {}

    def __repr__(self) -> str:
        return f"Local({self.k})"

    def offsets(self, X: int, Y: int) -> torch.Tensor:
        return self._offsets

    def scale(self, X: int, Y: int) -> float:
        return float(max(self.r, 1))

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, n, X, Y, G, d)`` by ``r`` on the spatial axes."""
        r = self.r
        return F.pad(t, (0, 0, 0, 0, r, r, r, r)) if r else t

    def _shifted(self, tpad: torch.Tensor, x0: int, x1: int, Y: int):
        for dx, dy in self._offsets.tolist():
            yield tpad[:, :, x0 + dx + self.r : x1 + dx + self.r, dy + self.r : dy + self.r + Y]

    def content(self, q: torch.Tensor, kpad: torch.Tensor, x0: int) -> torch.Tensor:
        """``q·k`` for every window slot: ``(B, n, xc, Y, Gq, K, Gk)``."""
        xc, Y = q.shape[2], q.shape[3]
        cols = [_pairwise_dot(q, ks) for ks in self._shifted(kpad, x0, x0 + xc, Y)]
        return torch.stack(cols, dim=-2)

    def positional(self, table: torch.Tensor, x0: int, X: int, Y: int) -> torch.Tensor:
        """``(B, n, xc, Y, Gq, H, K)`` → ``(B, n, xc, Y, H, Gq, K, 1)`` (a view)."""
        return table.transpose(-3, -2).unsqueeze(-1)

    def mask(self, x0: int, x1: int, X: int, Y: int, device) -> torch.Tensor:
        """``(xc, Y, 1, 1, K, 1)`` bool: window slot inside the image."""
        key = (X, Y, str(device))
        if key not in self._masks:
            off = self._offsets.to(device)
            rows = torch.arange(X, device=device)[:, None, None] + off[:, 0]
            cols = torch.arange(Y, device=device)[None, :, None] + off[:, 1]
            valid = (rows >= 0) & (rows < X) & (cols >= 0) & (cols < Y)
            self._masks[key] = valid[:, :, None, None, :, None]
        return self._masks[key][x0:x1]

    def aggregate(self, p: torch.Tensor, vpad: torch.Tensor, x0: int) -> torch.Tensor:
        """``Σ_slots p · v``: ``p (B, n, xc, Y, H, K, Gk)`` → ``(B, n, xc, Y, H, dv)``."""
        xc, Y = p.shape[2], p.shape[3]
        out = None
        for i, vs in enumerate(self._shifted(vpad, x0, x0 + xc, Y)):
            term = _weighted_sum(p[..., i, :], vs)
            out = term if out is None else out + term
        return out

    def pair_mask(self, X: int, Y: int, device=None) -> torch.Tensor:
        rows = torch.arange(X, device=device).repeat_interleave(Y)
        cols = torch.arange(Y, device=device).repeat(X)
        return ((rows[None, :] - rows[:, None]).abs() <= self.r) & (
            (cols[None, :] - cols[:, None]).abs() <= self.r
        )


class Global(Neighbourhood):
    """Every pixel of the image (the whole ``X×Y`` map is the neighbourhood)."""

    def __init__(self):
        self._ids: dict = {}

    def __repr__(self) -> str:
        return "Global()"

    def offsets(self, X: int, Y: int) -> torch.Tensor:
        dx = torch.arange(-(X - 1), X)
        dy = torch.arange(-(Y - 1), Y)
        return torch.stack(torch.meshgrid(dx, dy, indexing="ij"), -1).reshape(-1, 2)

    def scale(self, X: int, Y: int) -> float:
        return float(max(X - 1, Y - 1, 1))

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def offset_ids(self, X: int, Y: int, device) -> torch.Tensor:
        """``(N, N)`` long: row of :meth:`offsets` holding ``x_j − x_i``."""
        key = (X, Y, str(device))
        if key not in self._ids:
            rows = torch.arange(X, device=device).repeat_interleave(Y)
            cols = torch.arange(Y, device=device).repeat(X)
            drow = rows[None, :] - rows[:, None] + (X - 1)
            dcol = cols[None, :] - cols[:, None] + (Y - 1)
            self._ids[key] = drow * (2 * Y - 1) + dcol
        return self._ids[key]

    def content(self, q: torch.Tensor, k: torch.Tensor, x0: int) -> torch.Tensor:
        B, n, xc, Y, Gq, d = q.shape
        Gk = k.shape[4]
        s = q.reshape(B, n, xc * Y * Gq, d) @ k.reshape(B, n, -1, d).transpose(-1, -2)
        return s.view(B, n, xc, Y, Gq, -1, Gk)

    def positional(self, table: torch.Tensor, x0: int, X: int, Y: int) -> torch.Tensor:
        B, n, xc, _, Gq, H, R = table.shape
        ids = self.offset_ids(X, Y, table.device)[x0 * Y : (x0 + xc) * Y].view(xc, Y, 1, 1, X * Y)
        g = torch.gather(table, -1, ids.expand(B, n, xc, Y, Gq, H, X * Y))
        return g.transpose(-3, -2).unsqueeze(-1)

    def mask(self, x0: int, x1: int, X: int, Y: int, device):
        return None

    def aggregate(self, p: torch.Tensor, v: torch.Tensor, x0: int) -> torch.Tensor:
        B, n, xc, Y, H, K, Gk = p.shape
        out = p.reshape(B, n, xc * Y * H, K * Gk) @ v.reshape(B, n, K * Gk, -1)
        return out.view(B, n, xc, Y, H, -1)

    def pair_mask(self, X: int, Y: int, device=None):
        return None


def _pairwise_dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(..., Gq, d)·(..., Gk, d)`` → ``(..., Gq, Gk)``."""
    if q.shape[-2] == 1 and k.shape[-2] == 1:
        return (q * k).sum(-1, keepdim=True)
    return q @ k.transpose(-1, -2)


def _weighted_sum(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``p (..., H, Gk)`` and ``v (..., Gk, dv)`` → ``(..., H, dv)``."""
    if p.shape[-1] == 1:
        return p * v
    return p @ v


def make(patch_size: int | None) -> Neighbourhood:
    """``None`` → :class:`Global`; an odd positive int ``k`` → :class:`Local` ``(k)``."""
    if patch_size is None:
        return Global()
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise ValueError(f"patch_size must be None (global attention) or an odd positive int, got {patch_size!r}")
    if patch_size <= 0 or patch_size % 2 == 0:
        raise ValueError(
            f"patch_size must be an odd positive int (e.g. 3, 5, 7) or None for global attention, got {patch_size}"
        )
    return Local(patch_size)
