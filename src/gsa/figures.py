"""Regenerate the figures of the documentation: ``python -m gsa.figures`` or ``gsa figures``.

Three PNGs are written to ``--out`` (default ``docs/figures``):

* ``lifting.png`` (the idea of the paper's Fig. 1): a digit and its 90° rotation, and one channel
  of the lifted feature maps of both, for every element of ``p4``. Rotating the input rotates every
  lifted map *and* shifts the group axis cyclically by one: ``f(r·x)[h] = rot90(f(x)[r⁻¹h])``.
* ``steerability.png`` (paper §5.1): the positional scores ``q·ρ_h(δ)`` of one query of a ``p8``
  lifting layer, for every group element ``h``. They are copies of one another, rotated by 45°
  steps; the encodings are MLPs of the acted coordinates ``h⁻¹δ``, so 45° needs no interpolation.
* ``rotation_accuracy.png``: test accuracy against the rotation angle of the input (0–360°) for a
  ``z2`` and a ``p4`` GSA-Net. Without ``--z2-run``/``--p4-run`` both are trained here, briefly,
  with :func:`gsa.train.train` on *upright* digits (the embedded ``rotmnist-mini`` digits rotated
  back by their stored angles), so that the plot shows what equivariance buys: the ``p4`` model
  keeps its accuracy at every quarter turn, the ``z2`` model only at 0°. With run directories of
  ``gsa train`` the curves are measured on each run's own test split.

Everything runs on the CPU by default (``--device`` to change); ``--quick`` makes tiny versions
in seconds (for tests). The figures are drawn with Matplotlib's Agg backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "FIGURES",
    "RotationSetup",
    "upright_digits",
    "write_upright_npz",
    "lifting_figure",
    "steerability_figure",
    "rotation_accuracy_figure",
    "add_arguments",
    "run",
    "main",
]

#: Names of the figures, in the order they are made (file ``<name>.png``).
FIGURES: tuple[str, ...] = ("lifting", "steerability", "rotation_accuracy")

_DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=_DPI, metadata={"Software": None})
    os.replace(tmp, path)
    _pyplot().close(fig)
    return path


# --------------------------------------------------------------------------------------- data
def upright_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``rotmnist-mini`` digits of ``split`` rotated back to upright by their stored angles.

    Returns images float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` and labels int64 ``(N,)``. The digits
    went through two bilinear rotations (there and back), so they are slightly blurred.
    """
    from .data.rotmnist import mini_arrays
    from .data.transforms import rotate

    a = mini_arrays()
    x = torch.from_numpy(a[f"{split}_x"]).to(torch.float32)[:, None] / 255.0
    x = rotate(x, -torch.from_numpy(a[f"{split}_angle"]))
    return x.clamp(0.0, 1.0), torch.from_numpy(a[f"{split}_y"]).to(torch.int64)


def write_upright_npz(path: str | os.PathLike) -> Path:
    """Write the upright ``rotmnist-mini`` (:func:`upright_digits`) as an ``npz:`` dataset file.

    Keys ``x_train, y_train, x_valid, y_valid, x_test, y_test`` (uint8 images), so that
    ``gsa train --dataset npz:PATH`` and :func:`gsa.data.get_dataset` read it.
    """
    out = {}
    for split in ("train", "valid", "test"):
        x, y = upright_digits(split)
        out[f"x_{split}"] = (x[:, 0] * 255.0).round().to(torch.uint8).numpy()
        out[f"y_{split}"] = y.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return path


def _example_digit(label: int = 7) -> torch.Tensor:
    """The most upright test digit of class ``label``: ``(1, 1, 28, 28)`` in ``[0, 1]``."""
    from .data.rotmnist import mini_arrays

    a = mini_arrays()
    ang = a["test_angle"]
    dist = np.minimum(ang, 2 * np.pi - ang)
    dist = np.where(a["test_y"] == label, dist, np.inf)
    i = int(np.argmin(dist))
    x = torch.from_numpy(a["test_x"][i]).to(torch.float32)[None, None] / 255.0
    return x


# --------------------------------------------------------------------------------- lifting
def lifting_figure(path: str | os.PathLike, *, seed: int = 0, channels: int = 8) -> dict[str, Any]:
    """Draw ``lifting.png``: input, rotated input, and one lifted channel of both over ``p4``.

    A ``p4`` :class:`~gsa.nn.LiftingSelfAttention` (5×5, initialised with ``seed``) lifts the
    digit; the channel whose maps differ most between group elements is shown. Returns
    ``{"path", "channel", "equivariance_error"}`` where the error is
    ``max|f(r·x) − r·f(x)| / max|f(x)|`` (round-off).
    """
    from . import groups
    from .nn import LiftingSelfAttention

    plt = _pyplot()
    from matplotlib.patches import ConnectionPatch

    g = groups.get("p4")
    torch.manual_seed(seed)
    layer = LiftingSelfAttention(g, 1, channels, num_heads=2, patch_size=5).eval()
    x = _example_digit(7)
    xr = groups.act_on_image(g, 1, x)
    with torch.no_grad():
        f = layer(x)[0]  # (C, 4, X, Y)
        fr = layer(xr)[0]
        expected = groups.act_on_lifted(g, 1, f[None])[0]
    err = float((fr - expected).abs().max() / f.abs().max())
    # the channel that varies most along the group axis (relative to its range)
    spread = (f - f.mean(1, keepdim=True)).abs().amax(dim=(1, 2, 3)) / (f.amax(dim=(1, 2, 3)) - f.amin(dim=(1, 2, 3)))
    c = int(spread.argmax())
    maps = torch.stack([f[c], fr[c]])  # (2, 4, X, Y)
    lo, hi = float(maps.min()), float(maps.max())

    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    fig, axes = plt.subplots(2, 5, figsize=(11.0, 5.6), gridspec_kw={"wspace": 0.12, "hspace": 0.32})
    names = ["e (0°)", "r (90°)", "r² (180°)", "r³ (270°)"]
    for row, (img, fm, label) in enumerate(((x, f, "input x"), (xr, fr, "rotated input r·x"))):
        ax = axes[row, 0]
        ax.imshow(img[0, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(label, fontsize=11)
        for h in range(4):
            ax = axes[row, h + 1]
            ax.imshow(fm[c, h].numpy(), cmap="viridis", vmin=lo, vmax=hi)
            src = h if row == 0 else (h - 1) % 4
            for s in ax.spines.values():
                s.set_edgecolor(colors[src])
                s.set_linewidth(3.5)
            title = f"f(x) at h = {names[h]}" if row == 0 else f"f(r·x) at h = {names[h]}"
            ax.set_title(title, fontsize=10)
            if row == 1:
                ax.set_xlabel(f"= rot90 of f(x) at h = {names[src].split()[0]}", fontsize=9.5, color=colors[src])
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    # arrows from f(x)[h] to f(r·x)[h+1]
    for h in range(3):
        con = ConnectionPatch(
            xyA=(0.5, 0.0), coordsA=axes[0, h + 1].transAxes, xyB=(0.5, 1.13), coordsB=axes[1, h + 2].transAxes,
            arrowstyle="-|>", color=colors[h], linewidth=1.6, mutation_scale=14, shrinkA=2, shrinkB=2,
        )
        fig.add_artist(con)
    con = ConnectionPatch(
        xyA=(0.5, -0.02), coordsA=axes[0, 0].transAxes, xyB=(0.5, 1.0), coordsB=axes[1, 0].transAxes,
        arrowstyle="-|>", color="0.3", linewidth=1.6, mutation_scale=14, shrinkB=18,
    )
    fig.add_artist(con)
    fig.subplots_adjust(left=0.03, right=0.99, top=0.84, bottom=0.08)
    box = axes[0, 0].get_position()
    fig.text(box.x0 + box.width / 2 + 0.008, (box.y0 + axes[1, 0].get_position().y1) / 2, "rotate 90°",
             fontsize=9.5, color="0.3", ha="left", va="center")
    fig.suptitle(
        "Lifting self-attention (p4): rotating the input rotates every lifted map and shifts the group axis by one\n"
        "f(r·x) at h = rot90 of f(x) at r⁻¹h (one channel of a freshly initialised 5×5 lifting layer; "
        f"relative deviation {err:.0e}, float32 round-off)",
        fontsize=10.5,
    )
    _save(fig, Path(path))
    return {"path": str(path), "channel": c, "equivariance_error": err}


# ---------------------------------------------------------------------------- steerability
def _positional_scores(layer, q_pos: torch.Tensor, offsets: torch.Tensor, scale: float) -> torch.Tensor:
    """``(|H|, R)`` scores ``q_pos·ρ_h(δ)`` for offsets ``δ`` ``(R, 2)`` (pixels) of ``layer``."""
    from .nn.positional import acted_offsets

    coords = acted_offsets(layer.group, offsets, scale).to(torch.float32)  # (H, R, 2)
    rho = torch.cat([layer.row_encoding(coords[..., 0:1]), layer.col_encoding(coords[..., 1:2])], dim=-1)
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
    from . import groups
    from .nn import LiftingSelfAttention

    plt = _pyplot()
    g = groups.get(group)
    torch.manual_seed(seed)
    layer = LiftingSelfAttention(g, 1, 12, num_heads=2, patch_size=patch_size).eval()
    p = layer.row_dim + layer.col_dim
    x = _example_digit(7)
    with torch.no_grad():
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
    n = g.order
    fig, axes = plt.subplots(2, n, figsize=(1.45 * n + 0.9, 4.3), gridspec_kw={"wspace": 0.08, "hspace": 0.12})
    vlo, vhi = float(dense.min()), float(dense.max())
    amax = float(attn.max())
    extent = (-r - 0.5, r + 0.5, r + 0.5, -r - 0.5)
    for h in range(n):
        deg = math.degrees(g.angle(h))
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
    _save(fig, Path(path))
    return {"path": str(path), "rotation_error": err}


# ------------------------------------------------------------------------ rotation accuracy
@dataclass
class RotationSetup:
    """How :func:`rotation_accuracy_figure` trains its two models when no runs are given.

    By default both models are the main command's network and optimisation (recipe ``mini``: the
    ``rotmnist`` blocks at 24 channels, 2 heads, 3×3 windows; Adam with warm-up and cosine decay),
    trained on *upright* digits only, for ``epochs`` epochs of ``train_images`` images (about
    10 minutes per epoch for the ``p4`` model on two CPU cores, one for ``z2``). ``model_args``,
    ``batch_size`` and ``lr`` override the recipe's values when set.
    """

    train_images: int = 7000
    epochs: int = 1
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    eval_images: int = 1000
    rotation_step: float = 30.0
    rotation_images: int = 500
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "RotationSetup":
        """A setup that trains and evaluates in seconds (smoke tests; not a meaningful figure)."""
        return cls(train_images=32, epochs=1, eval_images=32, rotation_step=90.0, rotation_images=16,
                   model_args={"channels": 6, "num_heads": 1, "lifting_heads": 1, "block_sizes": (0, 1), "crop": 0})


def _train_model(group: str, data_path: Path, out: Path, setup: RotationSetup, progress: str) -> dict[str, Any]:
    from .train import make_config, train

    cfg = make_config(
        "mini",
        dataset=f"npz:{data_path}",
        group=group,
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        lr=setup.lr,
        train_subset=setup.train_images,
        eval_subset=setup.eval_images,
        rotation_step=setup.rotation_step,
        rotation_subset=setup.rotation_images,
        invariance_subset=8,
        attention_dropout=0.0,
        model_args=dict(setup.model_args),
        seed=setup.seed,
        device=setup.device,
        out=str(out),
        progress=progress,
        tensorboard=False,
    )
    report = train(cfg)
    return {
        "group": group,
        "angles_deg": list(report["rotation"]["angles_deg"]),
        "accuracy": list(report["rotation"]["accuracy"]),
        "images": int(report["rotation"]["images"]),
        "test_accuracy": float(report["test_accuracy"]),
        "params": int(report["param_count"]),
        "train_images": min(setup.train_images, 7000),
        "epochs": int(report["epochs_completed"]),
        "run": str(out),
    }


def _curve_from_run(run_dir: str, step: float, images: int, device: Optional[str]) -> dict[str, Any]:
    from .train import evaluate_run
    from .train.config import TrainConfig

    cfg = TrainConfig.load(run_dir)
    res = evaluate_run(run_dir, rotations=True, rotation_step=step, rotation_subset=images, device=device)
    rot = res["rotation"]
    n_train = cfg.train_subset
    return {
        "group": cfg.group,
        "angles_deg": list(rot["angles_deg"]),
        "accuracy": list(rot["accuracy"]),
        "images": int(rot["images"]),
        "test_accuracy": float(res["accuracy"]),
        "dataset": _dataset_name(cfg.dataset),
        "train_images": n_train,
        "epochs": cfg.epochs,
        "run": str(run_dir),
    }


def _dataset_name(dataset: str) -> str:
    """``npz:/some/dir/file.npz`` → ``npz:file.npz``: no machine paths in figures or their records."""
    kind, sep, where = str(dataset).partition(":")
    return f"{kind}:{Path(where).name}" if sep else kind


def rotation_accuracy_figure(
    path: str | os.PathLike,
    *,
    z2_run: Optional[str] = None,
    p4_run: Optional[str] = None,
    setup: Optional[RotationSetup] = None,
    work_dir: Optional[str | os.PathLike] = None,
    progress: str = "none",
) -> dict[str, Any]:
    """Draw ``rotation_accuracy.png``: accuracy vs input rotation for a ``z2`` and a ``p4`` model.

    Args:
        path: the PNG to write.
        z2_run: a ``gsa train`` run directory of a ``z2`` model, evaluated (best checkpoint, on
            its own test split) instead of training one here (see :class:`RotationSetup`).
        p4_run: the same for the ``p4`` model.
        setup: training/evaluation sizes for the models trained here (default
            :class:`RotationSetup`); ``rotation_step``/``rotation_images`` also apply to runs.
        work_dir: where trained runs and the upright dataset go (default: a temporary folder).
        progress: progress display of the training (``"none"``, ``"plain"``, ...).

    Returns:
        ``{"path", "z2": curve, "p4": curve}`` with ``angles_deg``, ``accuracy``, ``images``,
        ``train_images``, ``epochs``, ``run`` for each curve.
    """
    setup = setup or RotationSetup()
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gsa-figures-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, Any]] = {}
    try:
        data_path = None
        for group, run_dir in (("z2", z2_run), ("p4", p4_run)):
            if run_dir is not None:
                curves[group] = _curve_from_run(run_dir, setup.rotation_step, setup.rotation_images,
                                                setup.device)
                curves[group]["source"] = "run"
                continue
            if data_path is None:
                data_path = write_upright_npz(work / "rotmnist_mini_upright.npz")
            curves[group] = _train_model(group, data_path, work / f"run-{group}", setup, progress)
            curves[group]["dataset"] = "rotmnist-mini rotated upright"
            curves[group]["source"] = "trained"
    finally:
        if tmp is not None:
            tmp.cleanup()

    _plot_rotation(Path(path), curves)
    return {"path": str(path), **curves}


def _plot_rotation(path: Path, curves: dict[str, dict[str, Any]]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    styles = {"z2": ("tab:gray", "s", "z2 (translations only)"), "p4": ("tab:blue", "o", "p4 (90° rotations)")}
    for group in ("z2", "p4"):
        c = curves[group]
        xs = c["angles_deg"] + [360.0]
        ys = [100 * a for a in c["accuracy"]] + [100 * c["accuracy"][0]]
        color, marker, label = styles[group]
        mean = 100 * sum(c["accuracy"]) / len(c["accuracy"])
        ax.plot(xs, ys, marker=marker, markersize=4, color=color,
                label=f"{label}: {ys[0]:.1f}% at 0°, mean {mean:.1f}%")
    for a in range(90, 360, 90):
        ax.axvline(a, color="0.8", linewidth=0.9, zorder=0)
    ax.axhline(10, color="tab:red", linestyle=":", linewidth=1.0, label="chance (10 classes)")
    ax.set_xlim(0, 360)
    ax.set_xticks(range(0, 361, 45))
    ax.set_ylim(0, 100)
    ax.set_xlabel("rotation of the test images (degrees, counter-clockwise)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=9.5, framealpha=0.95)
    ax.set_title(_rotation_title(curves), fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _rotation_title(curves: dict[str, dict[str, Any]]) -> str:
    z2, p4 = curves["z2"], curves["p4"]
    if z2.get("source") == "trained" and p4.get("source") == "trained":
        return (
            "Small GSA-Nets trained on upright digits only, tested on rotated ones\n"
            f"(rotmnist-mini rotated upright: {z2['train_images']:,} training images, {z2['epochs']} epochs, "
            f"{z2['images']} test images per angle)"
        )

    def describe(c):
        n = "all" if c.get("train_images") is None else f"{c['train_images']:,}"
        return f"{c['group']}: {_dataset_name(c['dataset'])}, {n} training images, {c['epochs']} epochs"

    return f"GSA-Nets from gsa train runs, {p4['images']} test images per angle\n{describe(z2)}; {describe(p4)}"


# ------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of the figures command to ``p`` (used by ``gsa figures`` too)."""
    p.add_argument("--out", default="docs/figures", help="output folder (default: docs/figures)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help=f"comma-separated subset of: {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true", help="tiny models and subsets: seconds, for smoke tests")
    p.add_argument("--z2-run", default=None, metavar="DIR", help="gsa train run of a z2 model to evaluate")
    p.add_argument("--p4-run", default=None, metavar="DIR", help="gsa train run of a p4 model to evaluate")
    p.add_argument("--train-images", type=int, default=None, metavar="N",
                   help=f"training images for the models trained here (default {RotationSetup.train_images})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {RotationSetup.epochs})")
    p.add_argument("--rotation-step", type=float, default=None, metavar="DEG",
                   help=f"angle step of the accuracy curve (default {RotationSetup.rotation_step:g})")
    p.add_argument("--rotation-images", type=int, default=None, metavar="N",
                   help=f"test images per angle (default {RotationSetup.rotation_images})")
    p.add_argument("--device", default=None, help="device for training/evaluation (default cpu)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep the trained runs and the upright dataset here (default: a temporary folder)")
    p.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="plain",
                   help="training progress display (default plain)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Make the figures selected by parsed ``args`` (see :func:`add_arguments`); returns 0."""
    names = FIGURES if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    bad = [n for n in names if n not in FIGURES]
    if bad:
        from .train.errors import ConfigError

        raise ConfigError(f"unknown figure(s) {', '.join(bad)}; choose from: {', '.join(FIGURES)}")
    setup = RotationSetup.quick() if args.quick else RotationSetup()
    for name, value in (("train_images", args.train_images), ("epochs", args.epochs),
                        ("rotation_step", args.rotation_step), ("rotation_images", args.rotation_images),
                        ("device", args.device)):
        if value is not None:
            setattr(setup, name, value)
    setup.seed = args.seed
    out = Path(args.out)
    summary: dict[str, Any] = {}
    for name in names:
        t0 = time.time()
        target = out / f"{name}.png"
        if name == "lifting":
            res = lifting_figure(target, seed=args.seed)
        elif name == "steerability":
            res = steerability_figure(target, seed=args.seed, resolution=33 if args.quick else 97)
        else:
            res = rotation_accuracy_figure(target, z2_run=args.z2_run, p4_run=args.p4_run, setup=setup,
                                           work_dir=args.work_dir, progress=args.progress)
            for g in ("z2", "p4"):
                c = res[g]
                mean = sum(c["accuracy"]) / len(c["accuracy"])
                print(f"  {g}: accuracy at 0° {100 * c['accuracy'][0]:.1f}%, mean over angles {100 * mean:.1f}% "
                      f"({c['images']} test images per angle)", flush=True)
        summary[name] = _without_runs(res)
        print(f"wrote {target} ({time.time() - t0:.0f} s)", flush=True)
    record = out / "figures.json"
    if record.is_file():  # keep the entries of figures not remade this time
        try:
            summary = {**json.loads(record.read_text()), **summary}
        except ValueError:
            pass
    with open(record, "w") as fh:
        json.dump(summary, fh, indent=1, default=str)
        fh.write("\n")
    return 0


def _without_runs(res: dict[str, Any]) -> dict[str, Any]:
    """``res`` without the (temporary, machine-specific) run directories."""
    return {k: (_without_runs(v) if isinstance(v, dict) else v) for k, v in res.items() if k != "run"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m gsa.figures``: parse ``argv`` and make the figures."""
    parser = argparse.ArgumentParser(prog="python -m gsa.figures", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
