"""The figures of one layer: ``lifting.png`` (lifting equivariance) and ``steerability.png``.

Both use a freshly initialised :class:`~gsa.nn.LiftingSelfAttention` on one upright digit; nothing
is trained.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ._figure import save, subplots
from .digits import example_digit

__all__ = ["lifting_figure", "steerability_figure"]

_ELEMENT_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
_ELEMENT_NAMES = ["e (0°)", "r (90°)", "r² (180°)", "r³ (270°)"]


# --------------------------------------------------------------------------------- lifting
def lifting_figure(path: str | os.PathLike, *, seed: int = 0, channels: int = 8) -> dict[str, Any]:
    """Draw ``lifting.png``: input, rotated input, and one lifted channel of both over ``p4``.

    A ``p4`` :class:`~gsa.nn.LiftingSelfAttention` (5×5, initialised with ``seed``) lifts the
    digit; the channel whose maps differ most between group elements is shown. Returns
    ``{"path", "channel", "equivariance_error"}`` where the error is
    ``max|f(r·x) − r·f(x)| / max|f(x)|`` (round-off).
    """
    x, xr, f, fr, err = _lift_digit(seed, channels)
    # the channel that varies most along the group axis (relative to its range)
    spread = (f - f.mean(1, keepdim=True)).abs().amax(dim=(1, 2, 3)) / (f.amax(dim=(1, 2, 3)) - f.amin(dim=(1, 2, 3)))
    c = int(spread.argmax())
    _draw_lifting(Path(path), (x, xr), (f[c], fr[c]), err)
    return {"path": str(path), "channel": c, "equivariance_error": err}


def _lift_digit(seed: int, channels: int):
    """A digit ``x``, its rotation ``r·x``, their lifted maps ``(C, 4, X, Y)`` and the relative error."""
    from .. import groups
    from ..nn import LiftingSelfAttention

    g = groups.get("p4")
    torch.manual_seed(seed)
    layer = LiftingSelfAttention(g, 1, channels, num_heads=2, patch_size=5).eval()
    x = example_digit(7)
    xr = groups.act_on_image(g, 1, x)
    with torch.no_grad():
        f = layer(x)[0]  # (C, 4, X, Y)
        fr = layer(xr)[0]
        expected = groups.act_on_lifted(g, 1, f[None])[0]
    err = float((fr - expected).abs().max() / f.abs().max())
    return x, xr, f, fr, err


def _draw_lifting(path: Path, inputs, maps, err: float) -> None:
    """Two rows (``x`` and ``r·x``): the input, then its lifted channel at each element of ``p4``."""
    lo, hi = float(torch.stack(maps).min()), float(torch.stack(maps).max())
    fig, axes = subplots(2, 5, figsize=(11.0, 5.6), gridspec_kw={"wspace": 0.12, "hspace": 0.32})
    for row, (img, fm, label) in enumerate(zip(inputs, maps, ("input x", "rotated input r·x"))):
        ax = axes[row, 0]
        ax.imshow(img[0, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(label, fontsize=11)
        for h in range(4):
            ax = axes[row, h + 1]
            ax.imshow(fm[h].numpy(), cmap="viridis", vmin=lo, vmax=hi)
            src = h if row == 0 else (h - 1) % 4
            for s in ax.spines.values():
                s.set_edgecolor(_ELEMENT_COLORS[src])
                s.set_linewidth(3.5)
            title = f"f(x) at h = {_ELEMENT_NAMES[h]}" if row == 0 else f"f(r·x) at h = {_ELEMENT_NAMES[h]}"
            ax.set_title(title, fontsize=10)
            if row == 1:
                ax.set_xlabel(
                    f"= rot90 of f(x) at h = {_ELEMENT_NAMES[src].split()[0]}", fontsize=9.5, color=_ELEMENT_COLORS[src]
                )
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    _lifting_arrows(fig, axes)
    fig.suptitle(
        "Lifting self-attention (p4): rotating the input rotates every lifted map and shifts the group axis by one\n"
        "f(r·x) at h = rot90 of f(x) at r⁻¹h (one channel of a freshly initialised 5×5 lifting layer; "
        f"relative deviation {err:.0e}, float32 round-off)",
        fontsize=10.5,
    )
    save(fig, path)


def _lifting_arrows(fig, axes) -> None:
    """Arrows from ``f(x)[h]`` to ``f(r·x)[h+1]`` and from ``x`` to ``r·x`` ("rotate 90°")."""
    from matplotlib.patches import ConnectionPatch

    for h in range(3):
        con = ConnectionPatch(
            xyA=(0.5, 0.0),
            coordsA=axes[0, h + 1].transAxes,
            xyB=(0.5, 1.13),
            coordsB=axes[1, h + 2].transAxes,
            arrowstyle="-|>",
            color=_ELEMENT_COLORS[h],
            linewidth=1.6,
            mutation_scale=14,
            shrinkA=2,
            shrinkB=2,
        )
        fig.add_artist(con)
    con = ConnectionPatch(
        xyA=(0.5, -0.02),
        coordsA=axes[0, 0].transAxes,
        xyB=(0.5, 1.0),
        coordsB=axes[1, 0].transAxes,
        arrowstyle="-|>",
        color="0.3",
        linewidth=1.6,
        mutation_scale=14,
        shrinkB=18,
    )
    fig.add_artist(con)
    fig.subplots_adjust(left=0.03, right=0.99, top=0.84, bottom=0.08)
    box = axes[0, 0].get_position()
    fig.text(
        box.x0 + box.width / 2 + 0.008,
        (box.y0 + axes[1, 0].get_position().y1) / 2,
        "rotate 90°",
        fontsize=9.5,
        color="0.3",
        ha="left",
        va="center",
    )


# ---------------------------------------------------------------------------- steerability
def _positional_scores(layer, q_pos: torch.Tensor, offsets: torch.Tensor, scale: float) -> torch.Tensor:
    """``(|H|, R)`` scores ``q_pos·ρ_h(δ)`` for offsets ``δ`` ``(R, 2)`` (pixels) of ``layer``."""
    from ..nn.positional import acted_offsets

    coords = acted_offsets(layer.group, offsets, scale).to(torch.float32)  # (H, R, 2)
    rho = layer.positional(coords)  # (H, R, p)
    return rho @ q_pos


def steerability_figure(
    path: str | os.PathLike, *, group: str = "p8", patch_size: int = 9, seed: int = 0, resolution: int = 97
) -> dict[str, Any]:
    """Draw ``steerability.png``: one query's positional scores for every element of ``group``.

    Top row: ``q·ρ_h(δ)`` on a fine grid of continuous offsets ``δ`` over the patch, i.e. the
    function the layer samples. Bottom row: the attention the query pays over its
    ``patch_size×patch_size`` window from positions alone (softmax of the positional scores at the
    integer offsets the layer uses). The query vector is that of the centre pixel of a digit, head 0
    of a freshly initialised lifting layer (``seed``). Returns ``{"path", "rotation_error"}``: the
    largest difference between the map of element ``r^k`` and the map of ``e`` evaluated at
    coordinates rotated back by ``k`` steps (round-off: the maps are exact rotated copies).
    """
    from .. import groups
    from ..nn import LiftingSelfAttention

    g = groups.get(group)
    torch.manual_seed(seed)
    layer = LiftingSelfAttention(g, 1, 12, num_heads=2, patch_size=patch_size).eval()
    with torch.no_grad():
        dense, attn, err = _steerability_maps(layer, g, example_digit(7), resolution)
    _draw_steerability(Path(path), g, layer.neighbourhood.r, dense, attn)
    return {"path": str(path), "rotation_error": err}


def _steerability_maps(layer, g, x: torch.Tensor, resolution: int):
    """Scores on a fine grid ``(|H|, res, res)``, window attention ``(|H|, P, P)``, rotation error."""
    p = layer.row_dim + layer.col_dim
    X, Y = x.shape[-2:]
    q = layer.query(x[0, :, X // 2, Y // 2]).view(layer.num_heads, layer.mid_channels)[0]
    q_pos = q[:p] / math.sqrt(layer.in_channels)
    r = layer.neighbourhood.r
    scale = layer.neighbourhood.scale(X, Y)
    # continuous offsets covering the patch, in pixels
    t = torch.linspace(-r, r, resolution, dtype=torch.float64)
    fine = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    dense = _positional_scores(layer, q_pos, fine, scale).view(g.order, resolution, resolution)
    grid = layer.neighbourhood.offsets(X, Y)
    coarse = _positional_scores(layer, q_pos, grid, scale).view(g.order, 2 * r + 1, 2 * r + 1)
    attn = torch.softmax(coarse.flatten(1), dim=1).view_as(coarse)
    # check: map of r^k == map of e at coordinates rotated back by k steps
    err = 0.0
    for h in range(g.order):
        back = g.act_on_vectors(g.inverse(h), fine)
        ref = _positional_scores(layer, q_pos, back, scale)[0]
        err = max(err, float((dense[h].flatten() - ref).abs().max()))
    return dense, attn, err


def _draw_steerability(path: Path, g, r: int, dense: torch.Tensor, attn: torch.Tensor) -> None:
    """Top row: the continuous score maps; bottom row: the window attention; one column per element."""
    n = g.order
    fig, axes = subplots(2, n, figsize=(1.45 * n + 0.9, 4.3), gridspec_kw={"wspace": 0.08, "hspace": 0.12})
    vlo, vhi = float(dense.min()), float(dense.max())
    amax = float(attn.max())
    extent = (-r - 0.5, r + 0.5, r + 0.5, -r - 0.5)
    for h in range(n):
        deg = g.angle(h)
        ax = axes[0, h]
        im0 = ax.imshow(dense[h].numpy(), cmap="RdBu_r", vmin=vlo, vmax=vhi, extent=(-r, r, r, -r))
        ax.set_title(f"h = {deg:g}°" + (" (mirror)" if g.is_mirrored(h) else ""), fontsize=10)
        ax = axes[1, h]
        im1 = ax.imshow(attn[h].numpy(), cmap="magma", vmin=0.0, vmax=amax, extent=extent)
        ax.plot([0], [0], marker="+", color="cyan", markersize=8, markeredgewidth=1.5)
        for a in axes[:, h]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_ylabel("q·ρ_h(δ)\ncontinuous δ", fontsize=9.5)
    axes[1, 0].set_ylabel(f"attention over\n{2 * r + 1}×{2 * r + 1} window", fontsize=9.5)
    fig.subplots_adjust(left=0.07, right=0.92, top=0.8, bottom=0.03)
    for row, im in ((0, im0), (1, im1)):
        box = axes[row, -1].get_position()
        cax = fig.add_axes((0.93, box.y0, 0.012, box.height))
        fig.colorbar(im, cax=cax)
    fig.suptitle(
        f"Steerability ({g.name}): positional scores of one query for every group element are rotated copies\n"
        f"ρ_h(δ) = ρ(h⁻¹δ) is an MLP of the rotated offset, so {360 / g.rotations:g}° steps need no "
        "interpolation (head 0 of a freshly initialised lifting layer, query at the centre of a digit)",
        fontsize=10.5,
    )
    save(fig, path)
