"""Discrete dilation groups: scales ``s_k = base^k`` (``k = 0 … S−1``) and their actions.

The symmetry group is ``G = R^2 ⋊ H`` with ``H = (R>0, ×)`` the dilations (paper App. E),
discretised to ``S`` scales ``1, base, base², …``. :func:`get` names them ``"scale{base}x{S}"``:
``"scale2x3"`` is the dyadic set ``{1, 2, 4}``.

Why integer bases, and dyadic by default (paper App. E.1)
    A layer at scale ``s`` attends to the ``k×k`` offsets ``s·δ``. With an integer ``s`` these
    are pixels (a dilated, sparse window, like dilated convolutions): every scale costs the same
    ``k²`` keys and no key is interpolated. ``base = 2`` is the finest integer ratio, so the default
    is dyadic; ``base = 3`` (``"scale3x3"``: ``{1, 3, 9}``) is accepted too. Non-integer factors such
    as ``2^(1/2)`` would put keys between pixels and are not offered.

Why not :func:`gsa.groups.get`
    Those are finite, compact groups whose every element maps a lifted map to a permutation of its
    group axis; every layer of :mod:`gsa.nn` relies on that. A dilation group is non-compact and
    truncated to ``S`` scales here, so it has its own registry and its own layers
    (:mod:`gsa.scale.attention`); ``gsa.groups.get("scale2x3")`` stays an error.

Actions (``n`` is a power of the base: the element ``base^n``, ``n`` may be negative)
    * on an image ``(..., X, Y)``: ``[L_n f](p) = f(c + (p − c)/base^n)`` about the centre
      ``c = ((X−1)/2, (Y−1)/2)``, bilinear (:func:`rescale_image`), zeros outside the image;
      ``n > 0`` enlarges the picture.
    * on a lifted map ``(B, C, S, X, Y)``: ``[L_n F](p, k) = F(c + (p − c)/base^n, k − n)``: the
      spatial axes rescaled as an image and the scale axis shifted by ``n``; the ``n`` scales
      shifted in at one end have no source (the truncation of the scale range) and are zero.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import Registry, normalize

__all__ = ["ScaleGroup", "get", "names", "is_scale_group", "rescale_image", "act_on_image", "act_on_lifted"]

#: How any scale group is spelt (shown in the error for an unknown name).
PATTERNS: tuple[str, ...] = ("scale{base}x{S} (integer base >= 2, S >= 1 scales)",)
_PATTERN = re.compile(r"scale([1-9][0-9]*)x([1-9][0-9]*)")


@dataclass(frozen=True)
class ScaleGroup:
    """The dilations ``base^k``, ``k = 0 … num_scales − 1`` (with translations: ``R^2 ⋊ H``).

    Use :func:`gsa.scale.get` to obtain one by name (``"scale2x3"``: scales 1, 2, 4).
    """

    name: str
    base: int = 2
    num_scales: int = 3

    def __post_init__(self) -> None:
        for field, low in (("base", 2), ("num_scales", 1)):
            val = getattr(self, field)
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"a scale group needs an integer {field} >= {low}, got {val!r}")

    @property
    def order(self) -> int:
        """Number of scales ``S`` (the size of the lifted maps' scale axis)."""
        return self.num_scales

    def __len__(self) -> int:
        return self.num_scales

    @property
    def scales(self) -> list[int]:
        """The dilation factors ``[1, base, …, base^(S−1)]`` (integers: pixel-exact offsets)."""
        return [self.base**k for k in range(self.num_scales)]

    def log_scale(self, k: int) -> float:
        """``log(base^k)``: scales are evenly spaced in ``log s`` (the Haar measure ``ds/s`` is uniform)."""
        return k * math.log(self.base)

    def __repr__(self) -> str:
        return f"ScaleGroup({self.name!r}, scales={self.scales})"


#: the names listed by :func:`names`; any other ``scale{base}x{S}`` is made on request
_REGISTRY: Registry[ScaleGroup] = Registry(
    "scale group", {f"scale2x{s}": ScaleGroup(f"scale2x{s}", 2, s) for s in (1, 2, 3, 4)}, extra=PATTERNS
)
_MADE: dict[tuple[int, int], ScaleGroup] = {}


def names() -> list[str]:
    """The listed scale-group names: ``scale2x1`` (translations only) to ``scale2x4``."""
    return _REGISTRY.names()


def _parse(name: str) -> tuple[int, int] | None:
    match = _PATTERN.fullmatch(normalize(name))
    if not match or int(match.group(1)) < 2:
        return None
    return int(match.group(1)), int(match.group(2))


def is_scale_group(name) -> bool:
    """Whether ``name`` is a :class:`ScaleGroup` or spells one (``"scale2x3"``)."""
    return isinstance(name, ScaleGroup) or (isinstance(name, str) and _parse(name) is not None)


def get(name: str | ScaleGroup) -> ScaleGroup:
    """The scale group called ``name``: ``"scale{base}x{S}"``, one object per ``(base, S)``.

    Spelt as :mod:`gsa.registry` allows (case, ``-``, ``_`` and spaces ignored). A
    :class:`ScaleGroup` is returned unchanged; other names raise a one-line ``ValueError``.

    Example:
        >>> get("scale2x3").scales
        [1, 2, 4]
        >>> get("Scale-3x2") is get("scale3x2")
        True
    """
    if isinstance(name, ScaleGroup):
        return name
    if not isinstance(name, str):
        raise TypeError(f"scale group must be a name or a gsa.scale.ScaleGroup, got {type(name).__name__}")
    parsed = _parse(name)
    if parsed is None:
        raise _REGISTRY.error(_REGISTRY.unknown(name))
    canonical = f"scale{parsed[0]}x{parsed[1]}"
    if canonical in _REGISTRY:
        return _REGISTRY.get(canonical)
    if parsed not in _MADE:
        _MADE[parsed] = ScaleGroup(canonical, *parsed)
    return _MADE[parsed]


# --------------------------------------------------------------------------------------------
# Actions


def rescale_image(x: torch.Tensor, factor: float, *, mode: str = "bilinear") -> torch.Tensor:
    """Dilate images ``(..., X, Y)`` by ``factor`` about their centre: ``out(p) = x(c + (p − c)/factor)``.

    ``c = ((X−1)/2, (Y−1)/2)`` (pixel centres, as :func:`gsa.groups.rotate_image`). ``factor > 1``
    enlarges the picture (and crops what leaves the frame), ``factor < 1`` shrinks it; samples
    outside the input are zero. Interpolation with ``grid_sample`` (``mode``: ``"bilinear"``,
    ``"nearest"`` or ``"bicubic"``) in float64 coordinates; where ``c + (p − c)/factor`` is a pixel
    (for an odd size and ``factor = 2``: every ``p`` at an even distance from the centre; for
    ``factor = 1/2``: every ``p``) the value is copied up to round-off. Same shape and dtype as ``x``.
    """
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"rescale_image: expected a floating-point tensor (..., X, Y), got {getattr(x, 'shape', x)}")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"rescale_image: factor must be a finite number > 0, got {factor!r}")
    if factor == 1:
        return x.clone()
    X, Y = x.shape[-2:]
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    # source pixel of each output pixel, in grid_sample's align_corners=False units ((2·pix + 1)/size − 1)
    rows = (X - 1) / 2 + (torch.arange(X, dtype=torch.float64) - (X - 1) / 2) / factor
    cols = (Y - 1) / 2 + (torch.arange(Y, dtype=torch.float64) - (Y - 1) / 2) / factor
    grid = torch.stack(torch.meshgrid((2 * cols + 1) / Y - 1, (2 * rows + 1) / X - 1, indexing="xy"), -1)
    flat = x.reshape(1, -1, X, Y).to(work)
    out = F.grid_sample(
        flat, grid[None].to(device=x.device, dtype=work), mode=mode, padding_mode="zeros", align_corners=False
    )
    return out.to(x.dtype).reshape(x.shape)


def act_on_image(group: ScaleGroup | str, n: int, x: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """``L_n x``: the image ``(..., X, Y)`` dilated by ``base^n`` about its centre (:func:`rescale_image`)."""
    return rescale_image(x, float(get(group).base) ** n, mode=mode)


def act_on_lifted(group: ScaleGroup | str, n: int, x: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """``L_n x`` for a lifted map ``x (B, C, S, X, Y)``: ``[L_n x](p, k) = x(c + (p − c)/base^n, k − n)``.

    The spatial axes are dilated by ``base^n`` (:func:`rescale_image`) and the scale axis shifted by
    ``n``; the ``|n|`` scales shifted in at one end have no source in ``x`` and are zero (the
    truncation of the scale range: a finite ``S`` makes the action exact only away from the ends).
    """
    group = get(group)
    S = group.num_scales
    if x.dim() != 5 or x.shape[2] != S:
        raise ValueError(f"expected a lifted map (B, C, S={S}, X, Y) for {group.name}, got shape {tuple(x.shape)}")
    out = torch.zeros_like(x)
    lo, hi = max(0, n), min(S, S + n)  # target scales with a source k − n in 0 … S−1
    if lo < hi:
        out[:, :, lo:hi] = x[:, :, lo - n : hi - n]
    return act_on_image(group, n, out, mode=mode)
