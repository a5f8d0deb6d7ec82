"""Attention-dropout masks of the chunked core: a counter-based hash, and cheap PyTorch masks.

The native kernels draw their masks inline from a counter-based hash (:func:`dropout_params`,
:func:`keep_mask`): any slice of a chunk's masks can be regenerated from its counters alone, which is
how the backward pass and the kernels agree without storing masks. The PyTorch path evaluates the
same hash inside :func:`hash_masks` (tests compare the two paths with identical masks) and otherwise
draws its masks with :func:`dropout_keep_mask`, which is cheaper in PyTorch operations.
"""

from __future__ import annotations

import contextlib
import math

import torch

__all__ = ["dropout_params", "keep_mask", "slice_mask", "hash_masks", "hashing", "dropout_keep_mask"]

_M32 = 0xFFFFFFFF
_MIX1, _MIX2 = 0x85EBCA6B, 0xC2B2AE35


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def dropout_params(p: float, seed: int | torch.Tensor | None, cid: int) -> tuple:
    """``(threshold, key0, key1, on)`` of chunk ``cid``'s dropout masks (``on = 0``: no dropout).

    ``seed`` is an int, or a 0-d int64 tensor (drawn on the device: the keys are then 0-d tensors on
    it, computed without a host round-trip, bit-identical to the int seed's).

    Element ``n`` of the chunk's virtual ``(pixels, Gq, H, Gk, Kx, Ky)`` mask tensor is kept iff the
    16-bit half ``n mod 2`` (low half first) of ``fmix(fmix(lo(n//2) ^ key0) ^ (hi(n//2) + key1))``
    is ``>= threshold`` (``fmix``: MurmurHash3's 32-bit finaliser). The keep probability is
    ``1 − threshold / 2¹⁶`` (``p`` rounded to a multiple of 2⁻¹⁶), and any slice of the masks can be
    regenerated from its counters alone (the backward pass and the native kernels do)."""
    if p <= 0.0:
        return 0, 0, 0, 0
    thr = min(int(round(p * 65536.0)), 0xFFFF)
    if isinstance(seed, torch.Tensor):
        k = _splitmix64_tensor(seed.to(torch.int64) * 1000003 + cid)
        return thr, k & _M32, _shr(k, 32), 1
    k = _splitmix64((int(seed or 0) * 1000003 + cid) & 0xFFFFFFFFFFFFFFFF)
    return thr, k & _M32, k >> 32, 1


def _signed(c: int) -> int:
    """The uint64 constant ``c`` as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding uint64 bits."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix64_tensor(x: torch.Tensor) -> torch.Tensor:
    """:func:`_splitmix64` on int64 tensors (products wrap modulo 2⁶⁴, as the uint64 ones do)."""
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shr(x, 31)


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


def slice_mask(params, a: int, Gq: int, shape, device, out: torch.Tensor) -> torch.Tensor:
    """Float keep-mask of query element ``a`` for a ``(*PIX, H, Gk, Kx, Ky)`` slice, written into ``out``:
    counters ``(pixel · Gq + a) · H·Gk·K + inner`` of the chunk's ``(pixels, Gq, H, Gk, Kx, Ky)`` masks."""
    inner = math.prod(shape[-4:])
    npix = math.prod(shape[:-4])
    ctr = torch.arange(npix, dtype=torch.int64, device=device).mul_(Gq * inner).add_(a * inner)
    ctr = ctr[:, None] + torch.arange(inner, dtype=torch.int64, device=device)
    return out.copy_(_keep(ctr, params).view(shape))


_KEEP_BITS = 16
_hash_masks = {"on": 0}


def hashing() -> bool:
    """Whether the PyTorch path draws its masks from the hash (inside :func:`hash_masks`)."""
    return _hash_masks["on"] > 0


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


def dropout_keep_mask(
    shape, p: float, generator: torch.Generator, device, dtype=torch.float32, out: torch.Tensor | None = None
) -> torch.Tensor:
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
