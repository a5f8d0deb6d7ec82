"""Chunk bookkeeping of the chunked core: :class:`Spec` (shapes, chunking, dropout), scratch buffers,
dropout masks per query element, and the class axis of the group scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import masks

__all__ = ["Spec"]

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


def _mask(spec: Spec, cid: int, a: int, Gq: int, shape, dtype, device, scratch: "_Scratch") -> torch.Tensor:
    """Dropout keep-mask of query element ``a`` of chunk ``cid`` (PyTorch path), regenerable in backward."""
    out = scratch.get("mask", shape, dtype, device)
    if masks.hashing() or isinstance(spec.seed, torch.Tensor):  # a device seed: hashed on the device
        return masks.slice_mask(masks.dropout_params(spec.dropout, spec.seed, cid), a, Gq, shape, device, out)
    g = torch.Generator(device=device)
    g.manual_seed((spec.seed * 1000003 + cid * 131 + a) % (2**63 - 1))
    return masks.dropout_keep_mask(shape, spec.dropout, g, device, dtype, out=out)


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
