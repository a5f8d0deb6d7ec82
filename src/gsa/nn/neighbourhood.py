"""Neighbourhoods: which key pixels a query pixel attends to, and how the fast core visits them.

Local (``k×k`` window) and global (whole image) attention differ only here. A neighbourhood
provides

* the relative offsets whose positional encodings are tabulated (:meth:`~Neighbourhood.offsets`,
  normalised by :meth:`~Neighbourhood.scale`) and the all-pairs mask used by the dense oracle
  (:meth:`~Neighbourhood.pair_mask`);
* a *plan* (:meth:`~Neighbourhood.plan`) for one chunk of query rows, which the fast core in
  :mod:`gsa.nn.fastcore` uses for its three neighbourhood-dependent steps: the content scores
  ``q·k`` for every window slot, the positional scores ``q·ρ`` for every slot, and the value
  aggregation ``Σ_slots w·v`` (plus the transposed products needed by the backward pass).

Shapes (``Bc`` = batch × heads of the chunk, channels last):

* the query *pixel layout* of a chunk is ``PIX`` = ``(Bc, nx, ny, Tx, Ty)`` for local attention
  (query tiles of ``Tx×Ty`` pixels, padded with dummy pixels to whole tiles) and
  ``(Bc, xc, Y)`` for global attention;
* window slots ``K`` are two axes ``(Kx, Ky)``: ``(k, k)`` offsets for local attention, the whole
  ``(X, Y)`` image for global attention;
* content scores ``(*PIX, Gq, Kx, Ky, Gk)``; positional scores ``(*PIX, Gq, H, Kx, Ky)``;
  aggregation weights ``(*PIX, H, Kx, Ky, Gk)``.

Local attention never materialises the ``k²`` shifted copies of keys and values that ``unfold``
makes: each tile of ``Tx×Ty`` queries meets the ``(Tx+2r)×(Ty+2r)`` key pixels around it in one
matrix product, and the ``k×k`` band of that product is read through a strided view
(:meth:`LocalPlan.content`); the value aggregation is the same product with the band written into
a zero tile (:meth:`LocalPlan.aggregate`). Halo keys are shared by neighbouring tiles, so keys
are copied ``(Tx+2r)(Ty+2r)/(Tx·Ty)`` times, not ``k²`` times.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import native

__all__ = ["Neighbourhood", "Local", "Global", "LocalPlan", "GlobalPlan", "make", "bmm_narrow"]


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

    def slots(self, X: int, Y: int) -> int:
        """Number of key slots ``K`` per query pixel."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Local


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

    def slots(self, X: int, Y: int) -> int:
        return self.k * self.k

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, n, X, Y, G, d)`` by ``r`` on the spatial axes."""
        r = self.r
        return F.pad(t, (0, 0, 0, 0, r, r, r, r)) if r else t

    def pair_mask(self, X: int, Y: int, device=None) -> torch.Tensor:
        rows = torch.arange(X, device=device).repeat_interleave(Y)
        cols = torch.arange(Y, device=device).repeat(X)
        return ((rows[None, :] - rows[:, None]).abs() <= self.r) & ((cols[None, :] - cols[:, None]).abs() <= self.r)

    def tiles(self, X: int, Y: int, Gq: int, Gk: int, H: int) -> tuple[int, int]:
        """Query tile ``(Tx, Ty)``: big enough for efficient matrix products, small enough that
        the halo (``2r`` extra key rows/columns) wastes little; never larger than the image."""
        # aim for ~64 query rows (tile pixels × group elements) in each tile product
        # (measured on 2 CPU cores: for p4 and p8, 2×2 tiles beat 4×4 by ~8 %; they waste less of the
        # product on halo slots, (T+2r)²/k² = 1.44 instead of 2.56 for 5×5 windows)
        target = max(1, 64 // max(Gq, H) ** 2)
        t = max(1, int(round(math.sqrt(target))))
        t = max(t, min(2, self.k))
        return min(t, X), min(t, Y)

    def plan(self, X: int, Y: int, x0: int, x1: int, Gq: int, Gk: int, H: int, tiles=None):
        """The :class:`LocalPlan` for query rows ``x0 : x1`` (tiles from :meth:`tiles` unless given)."""
        Tx, Ty = tiles or self.tiles(X, Y, Gq, Gk, H)
        return LocalPlan(self, X, Y, x0, x1, Tx, Ty)

    def tile_mask(self, X: int, Y: int, x0: int, nx: int, ny: int, Tx: int, Ty: int, device) -> torch.Tensor:
        """``(nx, ny, Tx, Ty, k, k)`` bool: slot inside the image (dummy query pixels: all True)."""
        key = (X, Y, x0, nx, ny, Tx, Ty, str(device))
        m = self._masks.get(key)
        if m is None:
            k, r = self.k, self.r
            rows = x0 + torch.arange(nx * Tx, device=device)
            cols = torch.arange(ny * Ty, device=device)
            d = torch.arange(-r, r + 1, device=device)
            kr = rows[:, None] + d  # (rows, k)
            kc = cols[:, None] + d  # (cols, k)
            vr = (kr >= 0) & (kr < X) | (rows[:, None] >= X)  # dummy rows: everything valid
            vc = (kc >= 0) & (kc < Y) | (cols[:, None] >= Y)
            valid = vr[:, None, :, None] & vc[None, :, None, :]  # (rows, cols, k, k)
            m = valid.view(nx, Tx, ny, Ty, k, k).permute(0, 2, 1, 3, 4, 5).contiguous()
            if _compiling():  # no cache writes while tracing (e.g. inside a checkpoint region)
                return m
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = m
        return m

    def tile_bias(self, X, Y, x0, nx, ny, Tx, Ty, device, dtype) -> torch.Tensor | None:
        """Additive ``0 / −inf`` version of :meth:`tile_mask`; None when every slot is inside."""
        key = ("bias", X, Y, x0, nx, ny, Tx, Ty, str(device), dtype)
        if key not in self._masks:
            with torch.no_grad():
                m = self.tile_mask(X, Y, x0, nx, ny, Tx, Ty, device)
                bias = None
                if self.r > 0:  # tiles span whole rows, so edge columns always have outside slots
                    bias = torch.zeros(m.shape, device=device, dtype=dtype).masked_fill_(~m, float("-inf"))
            if _compiling():
                return bias
            self._masks[key] = bias
        return self._masks[key]


class LocalPlan:
    """Tiling of query rows ``x0 : x1`` for ``k×k`` local attention (see module docstring)."""

    local = True

    def __init__(self, nb: Local, X: int, Y: int, x0: int, x1: int, Tx: int, Ty: int):
        self.nb, self.X, self.Y, self.x0, self.x1 = nb, X, Y, x0, x1
        self.k, self.r = nb.k, nb.r
        self.Tx, self.Ty = Tx, Ty
        self.xc = x1 - x0
        self.nx, self.ny = -(-self.xc // Tx), -(-Y // Ty)
        self.Wx, self.Wy = Tx + 2 * self.r, Ty + 2 * self.r
        self.K = (self.k, self.k)

    # -- layout -------------------------------------------------------------------------------
    def query_tiles(self, t: torch.Tensor) -> torch.Tensor:
        """``(Bc, xc, Y, G, c)`` → ``(Bc, nx, ny, Tx, Ty, G, c)`` (dummy pixels are zero)."""
        Bc, xc, Y, G, c = t.shape
        px, py = self.nx * self.Tx - xc, self.ny * self.Ty - Y
        if px or py:
            t = F.pad(t, (0, 0, 0, 0, 0, py, 0, px))
        t = t.view(Bc, self.nx, self.Tx, self.ny, self.Ty, G, c)
        return t.permute(0, 1, 3, 2, 4, 5, 6).contiguous()

    def from_tiles(self, t: torch.Tensor) -> torch.Tensor:
        """``(Bc, nx, ny, Tx, Ty, G, c)`` → ``(Bc, xc, Y, G, c)``."""
        Bc, G, c = t.shape[0], t.shape[-2], t.shape[-1]
        t = t.permute(0, 1, 3, 2, 4, 5, 6).reshape(Bc, self.nx * self.Tx, self.ny * self.Ty, G, c)
        return t[:, : self.xc, : self.Y]

    def key_pad(self, X: int, Y: int, rows_total: int) -> tuple[int, int]:
        """Extra zero rows/cols (beyond ``r``) that keys need so every tile's halo exists."""
        return rows_total - X, self.ny * self.Ty - Y

    def key_tiles(self, slab: torch.Tensor) -> torch.Tensor:
        """Padded key rows ``(Bc, nx·Tx + 2r, ny·Ty + 2r, G, c)`` → ``(Bc·nx·ny, Wx·Wy·G, c)`` (tile rows
        ordered ``(wx, wy, a_k)``: each tile row ``wx`` is one contiguous run of the slab)."""
        Bc, G, c = slab.shape[0], slab.shape[-2], slab.shape[-1]
        t = slab.unfold(1, self.Wx, self.Tx).unfold(2, self.Wy, self.Ty)  # (Bc, nx, ny, G, c, Wx, Wy)
        return t.permute(0, 1, 2, 5, 6, 3, 4).reshape(Bc * self.nx * self.ny, self.Wx * self.Wy * G, c)

    def fold_keys(self, tiles: torch.Tensor, Bc: int, G: int) -> torch.Tensor:
        """Adjoint of :meth:`key_tiles`: sum the tiles back into ``(Bc, nx·Tx+2r, ny·Ty+2r, G, c)``."""
        c = tiles.shape[-1]
        t = tiles.view(Bc, self.nx, self.ny, self.Wx, self.Wy, G, c).permute(0, 1, 2, 5, 6, 3, 4)
        rows, cols = self.nx * self.Tx + 2 * self.r, self.ny * self.Ty + 2 * self.r
        t = torch.ops.aten.unfold_backward(t, [Bc, self.nx, cols, G, c, self.Wx], 2, self.Wy, self.Ty)
        return torch.ops.aten.unfold_backward(t, [Bc, rows, cols, G, c], 1, self.Wx, self.Tx)

    # -- band geometry ------------------------------------------------------------------------
    def _band(self, rows_per_pixel: int, Gk: int, Bc: int):
        """Size/stride of the ``(Bc, nx, ny, Tx, Ty, R, Gk, k, k)`` band inside a
        ``(Bc·nx·ny, Tx·Ty·R, Wx·Wy·Gk)`` tile product (columns ordered ``(wx, wy, a_k)``)."""
        Tx, Ty, Wx, Wy, k = self.Tx, self.Ty, self.Wx, self.Wy, self.k
        NK = Gk * Wx * Wy
        M = Tx * Ty * rows_per_pixel
        size = (Bc, self.nx, self.ny, Tx, Ty, rows_per_pixel, Gk, k, k)
        stride = (
            self.nx * self.ny * M * NK,
            self.ny * M * NK,
            M * NK,
            Ty * rows_per_pixel * NK + Wy * Gk,
            rows_per_pixel * NK + Gk,
            NK,
            1,
            Wy * Gk,
            Gk,
        )
        return size, stride, (Bc * self.nx * self.ny, M, NK)

    # -- the three steps ----------------------------------------------------------------------
    def content(self, qt: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
        """``q·k`` per window slot: ``(Bc, nx, ny, Tx, Ty, Gq, Gk, k, k)`` (a strided view)."""
        Bc, Gq, d = qt.shape[0], qt.shape[-2], qt.shape[-1]
        Gk = kt.shape[1] // (self.Wx * self.Wy)
        prod = torch.bmm(qt.reshape(-1, self.Tx * self.Ty * Gq, d), kt.transpose(1, 2))
        size, stride, _ = self._band(Gq, Gk, Bc)
        return prod.as_strided(size, stride)

    def band_matrix(self, w: torch.Tensor, scratch=None) -> torch.Tensor:
        """``(Bc, nx, ny, Tx, Ty, R, Gk, k, k)`` → zero tile ``(Bc·nx·ny, Tx·Ty·R, Wx·Wy·Gk)``.

        With ``scratch`` (no autograd), one zero buffer per geometry is reused: only the band is
        ever written, so the rest stays zero."""
        Bc, R, Gk = w.shape[0], w.shape[5], w.shape[6]
        size, stride, full = self._band(R, Gk, Bc)
        if scratch is None:
            buf = w.new_zeros(full)
        else:
            buf = scratch.get("band", full, w.dtype, w.device, zero=True)
        buf.as_strided(size, stride).copy_(w)
        return buf

    def band_out(self, R: int, Gk: int, Bc: int, dtype, device, scratch=None, name: str = "band"):
        """A zero tile ``(Bc·nx·ny, Tx·Ty·R, Wx·Wy·Gk)`` and its band view ``(Bc, nx, ny, Tx, Ty, R, Gk, k, k)``
        for kernels that write the band in place (only band entries are ever written: the rest stays 0)."""
        size, stride, full = self._band(R, Gk, Bc)
        buf = (
            torch.zeros(full, dtype=dtype, device=device)
            if scratch is None
            else scratch.get(name, full, dtype, device, zero=True)
        )
        return buf, buf.as_strided(size, stride)

    def aggregate_band(self, band: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
        """Band matrix (from :meth:`band_matrix`/:meth:`band_out`) times value tiles → ``(Bc, nx, ny, Tx, Ty, R, dv)``."""
        R = band.shape[1] // (self.Tx * self.Ty)
        out = bmm_narrow(band, vt)
        return out.view(-1, self.nx, self.ny, self.Tx, self.Ty, R, vt.shape[-1])

    def aggregate(self, w: torch.Tensor, vt: torch.Tensor, scratch=None) -> torch.Tensor:
        """``Σ_slots w·v``: ``w (Bc, nx, ny, Tx, Ty, H, Gk, k, k)`` → ``(Bc, nx, ny, Tx, Ty, H, dv)``."""
        return self.aggregate_band(self.band_matrix(w, scratch), vt)

    def add_folded(self, dst: torch.Tensor, tiles: torch.Tensor, Bc: int, G: int, use_native: bool = False) -> None:
        """``dst (Bc, nx·Tx+2r, ny·Ty+2r, G, c) +=`` :meth:`fold_keys` ``(tiles)`` (by the native kernel when
        ``use_native`` and it can take ``dst``)."""
        if use_native and native.usable(dst) and tiles.dtype == dst.dtype:
            native.fold_add(tiles, dst, self.nx, self.ny, G, self.Wx, self.Wy, self.Tx, self.Ty)
        else:
            dst.add_(self.fold_keys(tiles, Bc, G))

    def positional(self, qp: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``qp (*PIX, Gq, p)`` · ``table (H, k·k, p)`` → ``(*PIX, Gq, H, k, k)``."""
        H, R, p = table.shape
        s = qp @ table.reshape(H * R, p).t()
        return s.unflatten(-1, (H, self.k, self.k))

    def positional_backward(self, dP: torch.Tensor, qp: torch.Tensor, table: torch.Tensor):
        """Adjoint of :meth:`positional`: ``(dqp (*PIX, Gq, p), dtable (H, k·k, p))``."""
        H, R, p = table.shape
        dflat = dP.reshape(-1, H * R)
        dqp = bmm_narrow(dflat, table.reshape(H * R, p)).reshape(qp.shape)
        dtab = bmm_narrow(dflat.t(), qp.reshape(-1, p))
        return dqp, dtab.reshape(H, R, p)

    def mask_bias(self, device, dtype) -> torch.Tensor | None:
        """``(1, nx, ny, Tx, Ty, 1, 1, k, k)`` additive mask (0 inside the image, −inf outside)."""
        bias = self.nb.tile_bias(self.X, self.Y, self.x0, self.nx, self.ny, self.Tx, self.Ty, device, dtype)
        return None if bias is None else bias[None, :, :, :, :, None, None]


# ---------------------------------------------------------------------------------------------
# Global


class Global(Neighbourhood):
    """Every pixel of the image (the whole ``X×Y`` map is the neighbourhood)."""

    def __repr__(self) -> str:
        return "Global()"

    def offsets(self, X: int, Y: int) -> torch.Tensor:
        dx = torch.arange(-(X - 1), X)
        dy = torch.arange(-(Y - 1), Y)
        return torch.stack(torch.meshgrid(dx, dy, indexing="ij"), -1).reshape(-1, 2)

    def scale(self, X: int, Y: int) -> float:
        return float(max(X - 1, Y - 1, 1))

    def slots(self, X: int, Y: int) -> int:
        return X * Y

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """No padding: every key is inside the image."""
        return t

    def pair_mask(self, X: int, Y: int, device=None):
        return None

    def tiles(self, X, Y, Gq, Gk, H):
        """One query row per tile: ``(1, Y)``."""
        return (1, Y)

    def plan(self, X: int, Y: int, x0: int, x1: int, Gq: int, Gk: int, H: int, tiles=None):
        """The :class:`GlobalPlan` for query rows ``x0 : x1`` (``tiles`` is ignored)."""
        return GlobalPlan(X, Y, x0, x1)


class GlobalPlan:
    """Query rows ``x0 : x1`` against every key pixel."""

    local = False
    r = 0

    def __init__(self, X: int, Y: int, x0: int, x1: int):
        self.X, self.Y, self.x0, self.x1 = X, Y, x0, x1
        self.xc = x1 - x0
        self.K = (X, Y)

    def query_tiles(self, t: torch.Tensor) -> torch.Tensor:
        """Identity: global attention keeps the ``(Bc, xc, Y, G, c)`` layout."""
        return t

    def from_tiles(self, t: torch.Tensor) -> torch.Tensor:
        """Identity (see :meth:`query_tiles`)."""
        return t

    def key_tiles(self, keys: torch.Tensor) -> torch.Tensor:
        """``(Bc, X, Y, G, c)`` → ``(Bc, G·X·Y, c)`` (columns ordered ``(a_k, x, y)``)."""
        return keys.permute(0, 3, 1, 2, 4).reshape(keys.shape[0], -1, keys.shape[-1])

    def fold_keys(self, tiles: torch.Tensor, Bc: int, G: int) -> torch.Tensor:
        """Adjoint of :meth:`key_tiles`: ``(Bc, G·X·Y, c)`` → ``(Bc, X, Y, G, c)``."""
        return tiles.view(Bc, G, self.X, self.Y, -1).permute(0, 2, 3, 1, 4)

    def content(self, q: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
        """``(Bc, xc, Y, Gq, Gk, X, Y)``."""
        Bc, xc, Y, Gq, d = q.shape
        s = torch.bmm(q.reshape(Bc, xc * Y * Gq, d), kt.transpose(1, 2))
        return s.view(Bc, xc, Y, Gq, -1, self.X, self.Y)

    def band_matrix(self, w: torch.Tensor, scratch=None) -> torch.Tensor:
        """``(Bc, xc, Y, R, ...)`` weights as one ``(Bc, xc·Y·R, Gk·X·Y)`` matrix."""
        Bc, xc, Y, R = w.shape[:4]
        return w.reshape(Bc, xc * Y * R, -1)

    def band_out(self, R: int, Gk: int, Bc: int, dtype, device, scratch=None, name: str = "band"):
        """A ``(Bc, xc·Y·R, Gk·X·Y)`` matrix and its view ``(Bc, xc, Y, R, Gk, X, Y)`` (every entry is written)."""
        buf = torch.empty((Bc, self.xc * self.Y * R, Gk * self.X * self.Y), dtype=dtype, device=device)
        return buf, buf.view(Bc, self.xc, self.Y, R, Gk, self.X, self.Y)

    def aggregate_band(self, band: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
        """``(Bc, xc·Y·R, Gk·X·Y)`` weights times values → ``(Bc, xc, Y, R, dv)``."""
        out = bmm_narrow(band, vt)
        return out.view(out.shape[0], self.xc, self.Y, -1, vt.shape[-1])

    def aggregate(self, w: torch.Tensor, vt: torch.Tensor, scratch=None) -> torch.Tensor:
        """``Σ_keys w·v``: ``w (Bc, xc, Y, H, Gk, X, Y)`` → ``(Bc, xc, Y, H, dv)``."""
        return self.aggregate_band(self.band_matrix(w), vt)

    def add_folded(self, dst: torch.Tensor, tiles: torch.Tensor, Bc: int, G: int, use_native: bool = False) -> None:
        """``dst (Bc, X, Y, G, c) +=`` :meth:`fold_keys` ``(tiles)`` (``use_native`` is not needed here)."""
        dst.add_(self.fold_keys(tiles, Bc, G))

    def positional(self, qp: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``qp (Bc, xc, Y, Gq, p)`` · ``table (H, (2X-1)(2Y-1), p)`` → ``(Bc, xc, Y, Gq, H, X, Y)``.

        Only the offset rows this chunk needs enter the product; each query's ``X×Y`` window of
        it is then read through one strided view (no index gather)."""
        X, Y, xc, x0, x1 = self.X, self.Y, self.xc, self.x0, self.x1
        H, p = table.shape[0], table.shape[-1]
        Dx, Dy = X + xc - 1, 2 * Y - 1
        tab = table.view(H, 2 * X - 1, Dy, p)[:, X - x1 : 2 * X - 1 - x0]  # (H, Dx, Dy, p)
        full = qp @ tab.reshape(H * Dx * Dy, p).t()  # (Bc, xc, Y, Gq, H·Dx·Dy)
        Bc, _, _, Gq, _ = full.shape
        s_h = Dx * Dy
        s_q = H * s_h
        s_y = Gq * s_q
        s_x = Y * s_y
        s_b = xc * s_x
        size = (Bc, xc, Y, Gq, H, X, Y)
        stride = (s_b, s_x - Dy, s_y - 1, s_q, s_h, Dy, 1)
        full = full.contiguous()  # a fresh product: storage offset 0
        return full.as_strided(size, stride, (xc - 1) * Dy + (Y - 1))

    def positional_backward(self, dP: torch.Tensor, qp: torch.Tensor, table: torch.Tensor):
        """Adjoint of :meth:`positional`: ``(dqp, dtable (H, (2X-1)(2Y-1), p))``."""
        X, Y, xc, x0, x1 = self.X, self.Y, self.xc, self.x0, self.x1
        H, p = table.shape[0], table.shape[-1]
        Dx, Dy = X + xc - 1, 2 * Y - 1
        tab = table.view(H, 2 * X - 1, Dy, p)[:, X - x1 : 2 * X - 1 - x0]
        Bc, _, _, Gq = qp.shape[:4]
        full = dP.new_zeros(Bc, xc, Y, Gq, H * Dx * Dy)
        s_h = Dx * Dy
        s_q = H * s_h
        s_y = Gq * s_q
        s_x = Y * s_y
        full.as_strided(
            (Bc, xc, Y, Gq, H, X, Y), (xc * s_x, s_x - Dy, s_y - 1, s_q, s_h, Dy, 1), (xc - 1) * Dy + (Y - 1)
        ).copy_(dP)
        dqp = bmm_narrow(full, tab.reshape(H * Dx * Dy, p))
        dtab_c = bmm_narrow(full.view(-1, H * Dx * Dy).t(), qp.reshape(-1, p))
        dtable = table.new_zeros(H, 2 * X - 1, Dy, p)
        dtable[:, X - x1 : 2 * X - 1 - x0] = dtab_c.view(H, Dx, Dy, p)
        return dqp, dtable.view(H, -1, p)

    def mask_bias(self, device, dtype):
        """None: global attention masks nothing."""
        return None


def bmm_narrow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (matrices or batches) for products with few output columns, computed as ``(bᵀ aᵀ)ᵀ``.

    Returns a transposed view. CPU BLAS handles the narrow ``(M, N) × (N, 10)`` shapes of the value
    aggregation and the key/value gradients 2–4× slower than the transposed ``(10, N) × (N, M)`` ones
    (measured with MKL on 2 cores: 179 → 65 µs for 154 products of 16×144 by 144×10)."""
    return torch.matmul(b.transpose(-1, -2), a.transpose(-1, -2)).transpose(-1, -2)


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - older torch
        return False


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
