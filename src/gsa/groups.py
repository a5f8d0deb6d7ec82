"""Finite rotation and roto-reflection groups H and their actions.

The full symmetry group is ``G = R^2 ⋊ H``: translations plus a finite group ``H`` of ``n``
rotations (``p{n}``: ``p4``, ``p6``, ...) or ``n`` rotations and ``n`` mirrored rotations (``p{n}m``:
``mz2``, ``p4m``, ``p6m``, ...), for any ``n >= 1`` (see :func:`get` for the spellings).

Conventions (used everywhere in ``gsa``)
----------------------------------------
* Images are ``(..., X, Y)``: ``X`` indexes rows (top to bottom), ``Y`` columns (left to right).
  Spatial vectors are ``(row, col)`` pairs.
* Element ``e`` of a group with ``n`` rotations is ``r^s m^b`` with ``s = e % n`` and ``b = e // n``:
  indices ``0 .. n-1`` are the rotations by ``2πs/n`` and ``n .. 2n-1`` the mirrored rotations.
* The rotation ``r`` turns a picture counter-clockwise as displayed (row 0 at the top): on an image,
  ``r`` is ``torch.rot90(x, 1, dims=(-2, -1))``. Its matrix on ``(row, col)`` vectors is
  ``[[cos, -sin], [sin, cos]]``. The mirror ``m`` flips the columns, ``(row, col) -> (row, -col)``.
* A group element ``g`` acts on an image ``f`` by ``[L_g f](p) = f(g⁻¹ p)`` (about the image centre)
  and on a lifted map ``f(p, h)`` (``(B, C, |H|, X, Y)``) by ``[L_g f](p, h) = f(g⁻¹ p, g⁻¹ h)``:
  the spatial axes are transformed and the group axis is permuted.
* Exactness: quarter turns (``4·s % n == 0``) and mirrors permute pixels, so they act exactly, for
  any ``n``; other rotations (60°, 45°, 72°, ...) are exact on vectors and positional encodings but
  interpolated on images (:func:`rotate_image`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .registry import Registry, normalize

__all__ = [
    "Group",
    "get",
    "names",
    "list_groups",
    "act_on_image",
    "act_on_lifted",
    "rotate_image",
    "PATTERNS",
    "QUARTER_TURN_ATOL_DEG",
]

#: The groups listed by :func:`list_groups` (the paper's); any other ``n`` is spelt by a pattern.
_COMMON = {
    "z2": (1, False),
    "p4": (4, False),
    "p8": (8, False),
    "p12": (12, False),
    "p16": (16, False),
    "mz2": (1, True),
    "p4m": (4, True),
    "p8m": (8, True),
}
_ALIASES = {"z2m": "mz2"}

#: How any ``n >= 1`` is spelt (shown in the error for an unknown name); see :func:`get`.
PATTERNS: tuple[str, ...] = ("p{n}", "p{n}m", "C{n}", "D{n} (any n >= 1)")

# normalised spelling -> (n, mirror): p4, r4, c4, se2(4) | p4m, r4m, d4, e2(4)
_PATTERN_RES = (
    (re.compile(r"(?:p|r|c)([1-9][0-9]*)"), False),
    (re.compile(r"se2\(([1-9][0-9]*)\)"), False),
    (re.compile(r"(?:p|r)([1-9][0-9]*)m|d([1-9][0-9]*)"), True),
    (re.compile(r"e2\(([1-9][0-9]*)\)"), True),
)


@dataclass(frozen=True)
class Group:
    """A finite group ``H`` of ``rotations`` planar rotations, optionally with mirrors.

    Use :func:`gsa.groups.get` to obtain one by name. Elements are integers ``0 .. order-1``
    (see the module docstring for the layout).
    """

    name: str
    rotations: int
    mirror: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rotations, bool) or not isinstance(self.rotations, int) or self.rotations < 1:
            raise ValueError(f"a group needs an integer number of rotations >= 1, got {self.rotations!r}")

    @property
    def order(self) -> int:
        """Number of elements ``|H|``."""
        return self.rotations * (2 if self.mirror else 1)

    def __len__(self) -> int:
        return self.order

    @property
    def elements(self) -> list[tuple[float, bool]]:
        """``(angle in degrees, mirrored)`` for each element index."""
        return [(self.angle(e), self.is_mirrored(e)) for e in range(self.order)]

    def split(self, e: int) -> tuple[int, int]:
        """``(s, b)`` with element ``e = r^s m^b``."""
        self._check(e)
        return e % self.rotations, e // self.rotations

    def element(self, steps: int = 0, mirrored: bool = False) -> int:
        """Index of ``r^steps m^mirrored``."""
        if mirrored and not self.mirror:
            raise ValueError(f"group {self.name!r} has no mirrors")
        return steps % self.rotations + (self.rotations if mirrored else 0)

    def angle(self, e: int) -> float:
        """Rotation angle of element ``e`` in degrees (counter-clockwise)."""
        return 360.0 * self.split(e)[0] / self.rotations

    def is_mirrored(self, e: int) -> bool:
        """Whether element ``e`` contains the mirror (``e >= rotations``)."""
        return bool(self.split(e)[1])

    def compose(self, a: int, b: int) -> int:
        """Index of the product ``a·b`` (apply ``b`` first)."""
        sa, ma = self.split(a)
        sb, mb = self.split(b)
        s = sa + (-sb if ma else sb)
        return s % self.rotations + self.rotations * (ma ^ mb)

    def inverse(self, e: int) -> int:
        """Index of ``e⁻¹``."""
        s, m = self.split(e)
        return e if m else (-s) % self.rotations

    @cached_property
    def cayley(self) -> torch.Tensor:
        """``(|H|, |H|)`` long tensor with ``cayley[a, b] = a·b``."""
        e = torch.arange(self.order)
        s, m = e % self.rotations, e // self.rotations
        sa, ma, sb, mb = s[:, None], m[:, None], s[None, :], m[None, :]  # as in compose, for all pairs
        return (sa + torch.where(ma == 1, -sb, sb)) % self.rotations + self.rotations * (ma ^ mb)

    @cached_property
    def inverses(self) -> torch.Tensor:
        """``(|H|,)`` long tensor of inverse indices."""
        return torch.tensor([self.inverse(e) for e in range(self.order)], dtype=torch.long)

    def matrix(self, e: int) -> torch.Tensor:
        """``(2, 2)`` float64 matrix of ``e`` acting on ``(row, col)`` vectors (exact for quarter turns)."""
        return self.act_on_vectors(e, torch.eye(2, dtype=torch.float64)).T

    def act_on_vectors(self, e: int, v: torch.Tensor) -> torch.Tensor:
        """Apply element ``e`` to vectors ``v`` of shape ``(..., 2)`` (``(row, col)``), in float64.

        Quarter turns are applied exactly (by swapping and negating coordinates); only the remaining
        rotation by less than 90° uses floating-point sines and cosines.
        """
        s, m = self.split(e)
        v = v.to(torch.float64)
        if m:  # e = r^s m: mirror first
            v = torch.stack([v[..., 0], -v[..., 1]], dim=-1)
        return _rotate_vectors(v, s, self.rotations)

    def _check(self, e: int) -> None:
        if not 0 <= int(e) < self.order:
            raise ValueError(f"element {e} is not in group {self.name!r} of order {self.order}")

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"


def _rotate_vectors(v: torch.Tensor, steps: int, n: int) -> torch.Tensor:
    """Rotate ``(..., 2)`` float64 vectors by ``2π·steps/n``, quarter turns exactly.

    The angle is split into ``quarter`` exact quarter turns and a rest of ``rest/(4n)`` of a full
    turn (``0 <= rest < n``), so every multiple of 90° (``4·steps % n == 0``) is exact for any ``n``.
    """
    quarter, rest = divmod(4 * (steps % n), n)
    for _ in range(quarter):  # (row, col) -> (-col, row): +90°
        v = torch.stack([-v[..., 1], v[..., 0]], dim=-1)
    if rest:
        phi = 2 * math.pi * rest / (4 * n)
        c, s = math.cos(phi), math.sin(phi)
        v = torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], dim=-1)
    return v


# the paper's groups by name (plus z2m); every other spelling is parsed by _parse
_REGISTRY: Registry[Group] = Registry(
    "group", {key: Group(key, n, m) for key, (n, m) in _COMMON.items()}, aliases=_ALIASES, extra=PATTERNS
)
_MADE: dict[tuple[int, bool], Group] = {}  # groups built from a pattern, one object per (n, mirror)


def _parse(name: str) -> tuple[int, bool] | None:
    """``(n, mirror)`` for a spelling of one of :data:`PATTERNS` (or the aliases of :func:`get`)."""
    key = normalize(name)
    for pattern, mirror in _PATTERN_RES:
        match = pattern.fullmatch(key)
        if match:
            return int(next(g for g in match.groups() if g)), mirror
    return None


def _canonical_name(n: int, mirror: bool) -> str:
    """``z2``/``mz2`` for ``n = 1`` (the paper's names), ``p{n}``/``p{n}m`` otherwise."""
    if n == 1:
        return "mz2" if mirror else "z2"
    return f"p{n}m" if mirror else f"p{n}"


def names() -> list[str]:
    """The common group names (same as :func:`list_groups`)."""
    return _REGISTRY.names()


def list_groups() -> list[str]:
    """The common group names: the paper's ``z2, p4, p8, p12, p16, mz2, p4m, p8m``.

    Any other order is spelt by a pattern of :data:`PATTERNS`: ``p{n}`` (``n`` rotations) and
    ``p{n}m`` (``n`` rotations and mirrors) for every ``n >= 1``, e.g. ``p6``, ``p6m``, ``p3``.
    """
    return _REGISTRY.names()


def get(name: str | Group) -> Group:
    """Return the group called ``name``; the same object for every spelling.

    Accepted, as :mod:`gsa.registry` spells names (case-insensitive, ``-``/``_``/spaces ignored),
    for every ``n >= 1``:

    * ``p{n}`` — the ``n`` rotations by multiples of ``360°/n`` (``p6``); also escnn's ``C{n}``,
      the paper's ``R{n}`` and ``se2(n)``;
    * ``p{n}m`` — those rotations and as many mirrored rotations (``p6m``, order ``2n``); also
      escnn's ``D{n}``, the paper's ``R{n}M`` and ``e2(n)``;
    * ``z2`` (= ``p1``, translations only) and ``mz2`` (= ``p1m``, one mirror; also ``z2m``).

    A :class:`Group` is returned unchanged. Other names raise a one-line ``ValueError`` listing
    :func:`list_groups` and :data:`PATTERNS`.

    Example:
        >>> get("C6") is get("p6") and get("D6") is get("p6m")
        True
        >>> get("p6m").order, get("p1").name
        (12, 'z2')
    """
    if isinstance(name, Group):
        return name
    if not isinstance(name, str):
        raise TypeError(f"group must be a name or a gsa.groups.Group, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY.get(name)
    parsed = _parse(name)
    if parsed is None:
        raise _REGISTRY.error(_REGISTRY.unknown(name))
    canonical = _canonical_name(*parsed)
    if canonical in _REGISTRY:
        return _REGISTRY.get(canonical)
    if parsed not in _MADE:
        _MADE[parsed] = Group(canonical, *parsed)
    return _MADE[parsed]


# --------------------------------------------------------------------------------------------
# Actions on feature maps
# --------------------------------------------------------------------------------------------


#: Angles within this many degrees of a multiple of 90° are exact quarter turns (``torch.rot90``).
QUARTER_TURN_ATOL_DEG = 1e-6
_ROTATE_MODES = ("bilinear", "nearest", "bicubic")


def rotate_image(x: torch.Tensor, degrees, *, mode: str = "bilinear") -> torch.Tensor:
    """Rotate images ``(..., X, Y)`` counter-clockwise by ``degrees`` about their centre.

    Counter-clockwise as displayed with row 0 at the top (``plt.imshow``), about pixel
    ``((X − 1)/2, (Y − 1)/2)``: ``rotate_image(x, 90)`` is ``torch.rot90(x, 1, dims=(-2, -1))``.

    Args:
        x: ``(..., X, Y)``; any dtype for quarter turns, floating point otherwise.
        degrees: one angle for all images, or one per entry of the first axis (a sequence or a
            ``(B,)`` tensor).
        mode: ``"bilinear"`` (default), ``"nearest"`` or ``"bicubic"`` interpolation.

    Multiples of 90° (within :data:`QUARTER_TURN_ATOL_DEG`) are exact permutations of pixels
    (``torch.rot90``: a quarter turn of an ``X×Y`` image is ``Y×X``, as the group action must be).
    Other angles are resampled with ``grid_sample`` (zeros outside the image), which is only
    approximate on a pixel grid.
    """
    if mode not in _ROTATE_MODES:
        raise ValueError(f"rotate_image: mode must be one of {_ROTATE_MODES}, got {mode!r}")
    if not torch.is_tensor(x) or x.dim() < 2:
        raise ValueError(f"rotate_image: expected a tensor (..., X, Y), got {getattr(x, 'shape', type(x))}")
    a = torch.as_tensor(degrees, dtype=torch.float64).detach().to("cpu").reshape(-1)
    per_image = a.numel() != 1
    if per_image and (x.dim() < 3 or a.numel() != x.shape[0]):
        raise ValueError(
            f"rotate_image: got {a.numel()} angles for images of shape {tuple(x.shape)}; "
            "give one angle, or one per entry of the first axis"
        )
    if not torch.isfinite(a).all():
        raise ValueError("rotate_image: angles must be finite")
    k = torch.round(a / 90.0)
    exact = (a - 90.0 * k).abs() <= QUARTER_TURN_ATOL_DEG
    k = k.to(torch.int64) % 4
    if per_image and x.shape[-2] != x.shape[-1] and bool((exact & (k % 2 == 1)).any()):
        raise ValueError(
            f"rotate_image: a quarter turn of a non-square image {tuple(x.shape[-2:])} changes its "
            "shape; rotate such images one angle at a time"
        )
    if not per_image:
        if bool(exact[0]):
            return torch.rot90(x, int(k[0]), dims=(-2, -1))
        return _resample(x.reshape(1, -1, *x.shape[-2:]), a, mode).reshape(x.shape)
    out = torch.empty_like(x)
    for q in range(4):
        idx = torch.nonzero(exact & (k == q)).flatten().to(x.device)
        if idx.numel():
            out[idx] = torch.rot90(x[idx], q, dims=(-2, -1))
    idx = torch.nonzero(~exact).flatten()
    if idx.numel():
        sel = x[idx.to(x.device)]
        out[idx.to(x.device)] = _resample(sel.reshape(sel.shape[0], -1, *x.shape[-2:]), a[idx], mode).reshape(sel.shape)
    return out


def _resample(x: torch.Tensor, degrees: torch.Tensor, mode: str) -> torch.Tensor:
    """Rotate ``x (n, C, X, Y)`` by ``degrees (n,)`` float64 with ``grid_sample`` (zeros outside)."""
    if not x.is_floating_point():
        raise TypeError(f"rotate_image: angles other than multiples of 90° need floating-point images, got {x.dtype}")
    n, c, h, w = x.shape
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # output pixel (x, y) in normalised coordinates (y down) samples the input at R(-angle) in pixel units
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(device=x.device, dtype=work), [n, c, h, w], align_corners=False)
    out = F.grid_sample(x.to(work), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def act_on_image(group: Group | str, e: int, x: torch.Tensor) -> torch.Tensor:
    """``L_e x`` for an image ``x`` of shape ``(..., X, Y)``: mirror (if any), then rotate.

    Exact for quarter turns and mirrors; interpolated (see :func:`rotate_image`) otherwise.
    """
    group = get(group)
    s, m = group.split(e)
    if m:
        x = torch.flip(x, dims=(-1,))
    if s:
        x = rotate_image(x, 360.0 * s / group.rotations)
    return x


def act_on_lifted(group: Group | str, e: int, x: torch.Tensor) -> torch.Tensor:
    """``L_e x`` for a lifted map ``x`` of shape ``(B, C, |H|, X, Y)``.

    ``[L_e x](p, h) = x(e⁻¹ p, e⁻¹ h)``: the spatial axes are transformed with
    :func:`act_on_image` and the group axis is permuted (rotations shift it cyclically, the mirrored
    half the other way; a mirror swaps the halves).
    """
    group = get(group)
    if x.dim() < 3 or x.shape[-3] != group.order:
        raise ValueError(f"expected a lifted map (..., |H|={group.order}, X, Y), got shape {tuple(x.shape)}")
    inv = group.inverse(e)
    perm = group.cayley[inv].to(x.device)  # perm[h] = e⁻¹ h
    return act_on_image(group, e, x.index_select(-3, perm))
