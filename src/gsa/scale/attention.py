"""Lifting and group self-attention on the dilation–translation group ``R^2 ⋊ {base^k}`` (paper App. E).

A point of the group is ``(x, s)``; the product is ``(x, s)·(y, t) = (x + s·y, s·t)``. The
neighbourhood of ``(i, s)`` is the left translate ``(i, s)·N`` of one fixed set ``N``:

* lifting (:class:`ScaleLiftingSelfAttention`), ``N = {δ}``, the ``k×k`` window offsets: the output at
  ``(i, s)`` attends to the pixels ``i + s·δ`` (a window dilated by ``s``) with positional encoding
  ``ρ(s⁻¹·(s·δ)) = ρ(δ)``, the project's row/column coordinate MLPs
  (:class:`gsa.nn.positional.CoordinateMLP`) of ``δ / r``;
* group (:class:`ScaleGroupSelfAttention`), ``N = {(δ, base^m)}, |m| ≤ M``: the output at ``(i, s)``
  attends to ``(i + s·δ, s·base^m)``, encoded by ``ρ(δ)`` and an embedding of the log-scale
  difference ``m``; key scales outside ``0 … S−1`` do not exist (the scale range is truncated) and
  are left out of the softmax.

Both are equivariant: dilating the input by ``b = base^n`` (``f ↦ f(·/b)``, scale axis shifted by
``n``) gives the output at ``(b·i, b·s)`` the keys the original had at ``(i, s)``, with the same
encodings. On the pixel grid this is exact where the keys of ``b·i`` are pixels that the dilation
copies (for ``b = 2`` and an odd image size: ``i`` at an even distance from the centre), away from
the border and the ends of the scale range; elsewhere it is as good as the interpolation.

The Haar measure (Eqs. 20–21) and where it matters
    The left-invariant Haar measure of ``R^d ⋊ R>0`` is ``dµ(x, s) = dx ds / s^(d+1)``. Eqs. 20–21
    divide the sum over ``s·N(i)`` by ``s^d`` (``s^(d+1)`` on the group) so that a *Lebesgue* sum
    over a neighbourhood that grows with ``s`` stays the same size. Here:

    1. Each output attends to the left translate ``g·N`` of a fixed finite set, one sample per
       element of ``N``: the sample at ``g·n`` stands for the cell ``g·C_n``, whose Haar mass
       ``µ(g·C_n) = µ(C_n)`` does not depend on ``g`` (left invariance). Written as a Riemann sum,
       ``Σ_n w_n v(g·n) · s^d · s^(−d)``: the cell's Lebesgue volume ``s^d`` and the Haar factor
       ``s^(−d)`` cancel exactly, for every scale (the same for ``d + 1``: the log-scale cells
       ``ds/s`` of a grid ``base^k`` all have the mass ``log base``).
    2. The attention weights are a softmax: ``σ_n = e^(a_n) / Σ_m e^(a_m)``. Any factor common to all
       samples of one output, ``c(s)``, appears in the numerator and the denominator of
       ``Σ_n c(s) e^(a_n) v_n / Σ_m c(s) e^(a_m)`` and cancels. Multiplying the *normalised* output
       by ``s^(−d)`` instead, as Eqs. 20–21 read literally, would make the output at ``b·s`` smaller
       by ``b^(−d)`` than the one at ``s`` and break the equivariance.

    So no factor is applied in these layers, and none is missing: the factor matters only where
    samples of different Haar mass are summed without a normalisation: a neighbourhood sampled at
    every pixel of ``s·N`` (``s^d`` times more samples at scale ``s``) with unnormalised weights, or
    a sum over positions *and* scales of a lifted map. The network's ``readout="sum"``
    (:class:`gsa.models.ScaleGSANet`) is the one such sum in this package and weights scale ``s`` by
    ``s^(−d)`` (a max read-out needs no measure). The truncation of the scale window at the ends
    gives some outputs fewer samples (``k²·|window|`` shrinks); the softmax normalises over the
    samples that exist, which is the best a truncated range allows and is not a measure question.

Implementation: plain PyTorch, through :func:`gsa.nn.functional.group_attention`. A window dilated
by ``s`` on an ``X×Y`` image is a plain ``k×k`` window on each of the ``s²`` interleaved sub-grids
``x[a::s, b::s]`` (space-to-batch), so every backend of :mod:`gsa.nn.backends` computes it, with the
image border masked exactly as for ``s = 1``. Global attention has no dilated form (``s·S = S``;
the paper leaves it open) and is not offered.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import backends as _backends
from ..nn.attention import AttentionHeads, check_layer_args
from ..nn.functional import group_attention
from ..nn.positional import CoordinateMLP
from .group import ScaleGroup, get

__all__ = ["ScaleLiftingSelfAttention", "ScaleGroupSelfAttention", "dilated_attention"]


def _residue_classes(X: int, Y: int, d: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """``{(nx, ny): [(a, b), …]}``: the sub-grids ``[a::d, b::d]`` of an ``X×Y`` image, by shape."""
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a in range(min(d, X)):
        for b in range(min(d, Y)):
            out.setdefault((len(range(a, X, d)), len(range(b, Y, d))), []).append((a, b))
    return out


def dilated_attention(q, k, v, table_of, *, dilation: int, patch_size: int, group_scores=None, **kwargs):
    """:func:`gsa.nn.functional.group_attention` with the ``k×k`` window dilated by ``dilation``.

    Query ``i`` meets the keys ``i + dilation·δ`` (``δ`` the window offsets; keys outside the image
    are masked). Computed as ordinary ``k×k`` attention on each sub-grid ``[a::d, b::d]``, the
    sub-grids of one shape batched together.

    Args:
        q, k, v: ``(B, X, Y, Gq, d)``, ``(B, X, Y, Gk, d)``, ``(B, X, Y, Gk, dv)`` as for ``group_attention``.
        table_of: ``table_of(window, nx, ny)`` → the positional table ``(1, R, p)`` for the
            neighbourhood ``window`` (``patch_size``, or ``None`` when the window covers the whole
            sub-grid) on an ``nx×ny`` sub-grid.
        group_scores: ``(B, X, Y, Gq, 1, Gk)`` or ``None``.
        **kwargs: passed to ``group_attention`` (``dropout``, ``backend``, ...).

    Returns:
        ``(B, X, Y, 1, dv)``.
    """
    B, X, Y = q.shape[:3]
    out = v.new_zeros(B, X, Y, 1, v.shape[-1])
    for (nx, ny), subs in _residue_classes(X, Y, dilation).items():

        def pick(t, subs=subs):
            return torch.cat([t[:, a::dilation, b::dilation] for a, b in subs]) if t is not None else None

        window = None if patch_size > 2 * max(nx, ny) - 1 else patch_size  # same result, less memory
        o = group_attention(
            pick(q), pick(k), pick(v), table_of(window, nx, ny), group_scores=pick(group_scores),
            patch_size=window, **kwargs,
        )  # fmt: skip
        for n, (a, b) in enumerate(subs):
            out[:, a::dilation, b::dilation] = o[n * B : (n + 1) * B]
    return out


class _ScaleAttention(AttentionHeads):
    """Shared implementation; use :class:`ScaleLiftingSelfAttention` or :class:`ScaleGroupSelfAttention`."""

    lifting: bool = False

    def __init__(
        self,
        group,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 9,
        mid_channels: int | None = None,
        patch_size: int = 5,
        scale_window: int = 3,
        attention_dropout: float = 0.0,
        backend: str = "auto",
        coordinate_init: str = "spread",
    ):
        super().__init__()
        self.group: ScaleGroup = get(group)
        mid = out_channels // 2 if mid_channels is None else mid_channels
        odd = (
            ("scale self-attention needs an odd int patch_size (a local window)", patch_size),
            ("scale_window must be an odd int >= 1 (scales −M … M)", scale_window),
        )
        check_layer_args(self.lifting, in_channels, out_channels, num_heads, mid, attention_dropout, odd=odd)
        self.backend = _backends.check(backend)
        self.patch_size = patch_size
        self.scale_window = 1 if self.lifting else scale_window
        self._init_heads(in_channels, out_channels, num_heads, mid)
        self.row_encoding = CoordinateMLP(self.row_dim, init=coordinate_init)
        self.col_encoding = CoordinateMLP(self.col_dim, init=coordinate_init)
        if not self.lifting:
            self.scale_embedding = nn.Embedding(scale_window, self.grp_dim)
        self.attention_dropout = nn.Dropout(attention_dropout)

    def extra_repr(self) -> str:
        window = "" if self.lifting else f", scale_window={self.scale_window}"
        return (
            f"group={self.group.name}, in={self.in_channels}, out={self.out_channels}, heads={self.num_heads}, "
            f"mid={self.mid_channels}, local {self.patch_size}x{self.patch_size} dilated by {self.group.scales}"
            f"{window}, backend={self.backend}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        S = self.group.num_scales
        want = "(B, C, X, Y)" if self.lifting else f"(B, C, S={S}, X, Y)"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor {want}, got {type(x).__name__}")
        rank_ok = x.dim() == (4 if self.lifting else 5) and (self.lifting or x.shape[2] == S)
        if not rank_ok or x.shape[1] != self.in_channels or 0 in x.shape[-2:]:
            raise ValueError(
                f"{type(self).__name__} expects input {want} with C={self.in_channels} "
                f"({self.group.name}), got shape {tuple(x.shape)}"
            )

    def offsets_encoding(self, window: int | None, nx: int, ny: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """``(1, R, row_dim + col_dim)`` encodings ``ρ(δ)`` of the offsets of ``window`` on an ``nx×ny`` grid.

        ``δ`` counted in steps of the dilated window (``ρ(s⁻¹·(s·δ)) = ρ(δ)``, the same at every
        scale), normalised by the window's radius ``r`` as in :class:`gsa.nn.LiftingSelfAttention`.
        """
        off = _backends.neighbourhood(window).offsets(nx, ny).to(device=device, dtype=dtype)
        c = off / float(max(self.patch_size // 2, 1))
        return torch.cat([self.row_encoding(c[..., 0:1]), self.col_encoding(c[..., 1:2])], dim=-1)[None]

    def _key_scales(self, t: int) -> range:
        """Key scale indices of output scale ``t``: ``t + m`` for ``|m| ≤ M``, truncated to ``0 … S−1``."""
        M = self.scale_window // 2
        return range(max(0, t - M), min(self.group.num_scales, t + M + 1))

    def _attend(self, q, k, v, t: int, backend: str) -> torch.Tensor:
        """Output scale ``t``: ``(B·n, X, Y, 1, d)``."""
        keys = [0] if self.lifting else list(self._key_scales(t))
        qt = q if self.lifting else q[:, :, :, t : t + 1]
        kt, vt = k[:, :, :, keys[0] : keys[-1] + 1], v[:, :, :, keys[0] : keys[-1] + 1]
        scores = None
        if not self.lifting:
            M = self.scale_window // 2
            emb = self.scale_embedding.weight[keys[0] - t + M : keys[-1] - t + M + 1]  # (Gk, grp)
            scores = (qt[..., self.row_dim + self.col_dim :] @ emb.t()).unsqueeze(-2)  # (Bn, X, Y, 1, 1, Gk)

        def table_of(window, nx, ny):
            return self.offsets_encoding(window, nx, ny, q.device, q.dtype)

        return dilated_attention(
            qt, kt, vt, table_of, dilation=self.group.scales[t], patch_size=self.patch_size,
            group_scores=scores, dropout=self.attention_dropout.p if self.training else 0.0, backend=backend,
        )  # fmt: skip

    def forward(self, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
        """Lifting: ``(B, C_in, X, Y)`` → ``(B, C_out, S, X, Y)``; group: ``(B, C_in, S, X, Y)`` → same."""
        self._check_input(x)
        backend = _backends.check(backend or self.backend)
        q, k, v = self._project(x)
        o = torch.cat([self._attend(q, k, v, t, backend) for t in range(self.group.num_scales)], dim=3)
        return self._finish(o, x.shape[0])


class ScaleLiftingSelfAttention(_ScaleAttention):
    """Lifting self-attention on ``R^2 ⋊ {base^k}`` (Eq. 20): ``(B, C_in, X, Y) → (B, C_out, S, X, Y)``.

    The output at scale ``s = base^k`` attends, per head, to the ``k×k`` window dilated by ``s``
    (keys ``i + s·δ``), with the positional encoding ``ρ(δ)`` (row/column coordinate MLPs) and a
    softmax over the window (no Haar factor: see :mod:`gsa.scale.attention`).

    Args:
        group: a :class:`gsa.scale.ScaleGroup` or its name (``"scale2x3"``).
        in_channels, out_channels: ``C_in`` and ``C_out``.
        num_heads: attention heads.
        mid_channels: channels per head (default ``out_channels // 2``).
        patch_size: odd ``k`` of the ``k×k`` window at scale 1 (required: no global attention).
        scale_window: unused by the lifting layer (one input scale).
        attention_dropout: dropout on the attention probabilities.
        backend: any backend of :mod:`gsa.nn.backends` (``"auto"``, ``"reference"``, ...).
        coordinate_init: ``"spread"`` or ``"zero"`` (:class:`gsa.nn.positional.CoordinateMLP`).

    Equivariance: ``layer(act_on_image(g, n, x))[:, :, k + n] ≈ act_on_image(g, n, layer(x)[:, :, k])``
    (:mod:`gsa.scale.group`), exactly at the pixels the dilation copies, away from the border.
    """

    lifting = True


class ScaleGroupSelfAttention(_ScaleAttention):
    """Group self-attention on ``R^2 ⋊ {base^k}`` (Eq. 21): ``(B, C_in, S, X, Y) → (B, C_out, S, X, Y)``.

    The query is the feature at the output element ``(i, s)``; its keys are ``(i + s·δ, s·base^m)``
    for the ``k×k`` offsets ``δ`` and ``|m| ≤ M`` (``scale_window = 2M + 1``), one softmax over all
    of them. Positional encoding per head: row and column MLPs of ``δ`` (``mid // 3`` channels each)
    and an embedding of ``m``, the log-scale difference in steps of ``log base`` (the rest). Key
    scales outside ``0 … S−1`` are left out (truncation). Arguments as
    :class:`ScaleLiftingSelfAttention`.

    Equivariance: ``layer(act_on_lifted(g, n, x)) ≈ act_on_lifted(g, n, layer(x))`` at output scales
    whose key window stays inside the range on both sides (``M ≤ k`` and ``k + n + M ≤ S − 1``).
    """

    lifting = False
