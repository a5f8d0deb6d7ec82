"""The rotation-robustness experiment: ``rotation_accuracy.png``, accuracy against input rotation.

A ``z2`` and a ``p4`` GSA-Net are either trained here, briefly, with :func:`gsa.train.train` on
upright digits (:class:`RotationSetup`), or read from ``gsa train`` run directories; both are then
tested on rotated digits and their curves drawn side by side.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ._figure import save, subplots
from .digits import write_upright_npz

__all__ = ["RotationSetup", "rotation_accuracy_figure"]


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
        return cls(
            train_images=32,
            epochs=1,
            eval_images=32,
            rotation_step=90.0,
            rotation_images=16,
            model_args={"channels": 6, "num_heads": 1, "lifting_heads": 1, "block_sizes": (0, 1), "crop": 0},
        )


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
                curves[group] = _curve_from_run(run_dir, setup.rotation_step, setup.rotation_images, setup.device)
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


def _train_model(group: str, data_path: Path, out: Path, setup: RotationSetup, progress: str) -> dict[str, Any]:
    from ..train import make_config, train

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
    from ..train import evaluate_run
    from ..train.config import TrainConfig

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


def _plot_rotation(path: Path, curves: dict[str, dict[str, Any]]) -> None:
    fig, ax = subplots(figsize=(8.0, 4.6))
    styles = {"z2": ("tab:gray", "s", "z2 (translations only)"), "p4": ("tab:blue", "o", "p4 (90° rotations)")}
    for group in ("z2", "p4"):
        c = curves[group]
        xs = c["angles_deg"] + [360.0]
        ys = [100 * a for a in c["accuracy"]] + [100 * c["accuracy"][0]]
        color, marker, label = styles[group]
        mean = 100 * sum(c["accuracy"]) / len(c["accuracy"])
        ax.plot(
            xs, ys, marker=marker, markersize=4, color=color, label=f"{label}: {ys[0]:.1f}% at 0°, mean {mean:.1f}%"
        )
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
    save(fig, path)


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
