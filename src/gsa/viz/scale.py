"""The scale-robustness demo: ``scale_accuracy.png``, accuracy against the input's scale.

A scale-equivariant GSA-Net (preset ``scalemnist``, group ``scale2x3``: scales 1, 2, 4) and its
``z2`` twin (the same preset on ``scale2x1``: one scale, so translations only, the same number of
parameters and the same read-out) are trained briefly, here, on *unscaled* upright
``rotmnist-mini`` digits, then tested on test digits dilated about their centre by factors
``2^(k/2)``, ``k = −2 … 2`` (0.5 … 2, :func:`gsa.scale.rescale_image`, bilinear), and on digits
dilated by a random log-uniform factor in ``[0.5, 2]`` (:func:`rescale_digits`). No download: the
digits are the ones embedded in ``gsa``.

Regenerate with ``gsa figures --only scale_accuracy`` (or ``python -m gsa.viz --only
scale_accuracy``); ``--train-images``, ``--epochs`` and ``--device`` set the training budget.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ._figure import save, subplots
from .digits import upright_digits

__all__ = ["ScaleSetup", "rescale_digits", "scale_accuracy_figure"]


#: The demo's changes to the ``scalemnist`` preset: what made the ``mini`` recipe learn (batch norm, no
#: dropout, the digits averaged over 2×2 pixels, 3×3 windows; docs/learning.md).
DEMO_MODEL_ARGS = {"norm": "batch", "input_pool": 2, "patch_size": 3, "attention_dropout": 0.0, "value_dropout": 0.0}


@dataclass
class ScaleSetup:
    """How :func:`scale_accuracy_figure` trains and tests its two models.

    Training: ``epochs`` passes over ``train_images`` digits, batch ``batch_size``, Adam at ``lr``
    with a linear warm-up over the first ``warmup`` fraction of the steps, then cosine decay;
    ``model_args`` override the preset's fields (default :data:`DEMO_MODEL_ARGS`). Measured on this
    project's two-core CPU (AMD EPYC VM, 2 threads): the scale model trains at about 21 images per second,
    the ``z2`` twin at 80–90, so the defaults (2 × 7,000 digits each, 6 × 1,000 test digits) took
    15 minutes (``--device cuda`` where there is a GPU).
    """

    train_images: int = 7000
    epochs: int = 2
    batch_size: int = 16
    lr: float = 5e-3
    warmup: float = 0.05
    factors: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-2, 3))
    test_images: int = 1000
    model_args: dict = field(default_factory=lambda: dict(DEMO_MODEL_ARGS))
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "ScaleSetup":
        """Seconds instead of minutes (smoke tests; not a meaningful figure)."""
        return cls(
            train_images=16,
            epochs=1,
            batch_size=8,
            factors=(0.5, 1.0, 2.0),
            test_images=8,
            model_args={**DEMO_MODEL_ARGS, "channels": 6, "num_heads": 1, "block_sizes": (0, 1)},
        )


def rescale_digits(x: torch.Tensor, factors) -> torch.Tensor:
    """Dilate each image of ``x (N, C, X, Y)`` about its centre by its own factor (``(N,)`` or one number).

    A dataset transform built on :func:`gsa.scale.rescale_image` (bilinear, zeros outside).
    """
    from ..scale import rescale_image

    f = torch.as_tensor(factors, dtype=torch.float64).reshape(-1).expand(x.shape[0])
    return torch.stack([rescale_image(img, float(s)) for img, s in zip(x, f)]) if len(x) else x.clone()


def _random_factors(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` factors log-uniform in ``[low, high]``."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _train(group: str, x: torch.Tensor, y: torch.Tensor, setup: ScaleSetup, progress: str = "none") -> torch.nn.Module:
    """A ``scalemnist`` net on ``group`` trained with Adam, linear warm-up and cosine decay; returned in
    eval mode. ``progress`` other than ``"none"`` prints a line every quarter epoch (mean loss and images
    per second since the last line)."""
    from ..models import create
    from ..train.schedule import LRSchedule

    torch.manual_seed(setup.seed)
    net = create("scalemnist", group=group, **setup.model_args).to(setup.device)
    per_epoch = math.ceil(len(x) / setup.batch_size)
    steps = setup.epochs * per_epoch
    opt = torch.optim.Adam(net.parameters(), lr=setup.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule("cosine", steps, round(setup.warmup * steps)))
    gen = torch.Generator().manual_seed(setup.seed)
    net.train()
    report = max(1, per_epoch // 4)  # a progress line every quarter epoch
    t0, step, total, seen = time.time(), 0, 0.0, 0
    for epoch in range(setup.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), setup.batch_size):
            idx = order[i : i + setup.batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[idx].to(setup.device)), y[idx].to(setup.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step, total, seen = step + 1, total + float(loss.detach()) * len(idx), seen + len(idx)
            if progress != "none" and (step % report == 0 or step == steps):
                print(
                    f"  {group} epoch {epoch + 1}/{setup.epochs}, step {step}/{steps}: train loss "
                    f"{total / seen:.3f}, {seen / max(time.time() - t0, 1e-9):.1f} img/s",
                    flush=True,
                )
                total, seen, t0 = 0.0, 0, time.time()
    return net.eval()


@torch.no_grad()
def _accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """Fraction of ``x`` classified as ``y`` (batches of 100)."""
    hits = 0
    for i in range(0, len(x), 100):
        hits += int((net(x[i : i + 100].to(device)).argmax(1).cpu() == y[i : i + 100]).sum())
    return hits / max(len(x), 1)


def scale_accuracy_figure(
    path: str | os.PathLike, *, setup: Optional[ScaleSetup] = None, progress: str = "none"
) -> dict[str, Any]:
    """Train both models (:class:`ScaleSetup`), test them on dilated digits, draw ``path``.

    Returns:
        ``{"path", "factors", "scale2x3": curve, "scale2x1": curve}``; a curve has ``accuracy`` (one per
        factor), ``random_scale_accuracy``, ``params``, ``train_seconds``.
    """
    setup = setup or ScaleSetup()
    x_train, y_train = upright_digits("train")
    x_test, y_test = upright_digits("test")
    x_train, y_train = x_train[: setup.train_images], y_train[: setup.train_images]
    x_test, y_test = x_test[: setup.test_images], y_test[: setup.test_images]
    gen = torch.Generator().manual_seed(setup.seed + 1)
    x_random = rescale_digits(x_test, _random_factors(len(x_test), 0.5, 2.0, gen))
    dilated = [rescale_digits(x_test, f) for f in setup.factors]
    res: dict[str, Any] = {"path": str(path), "factors": list(setup.factors)}
    for group in ("scale2x3", "scale2x1"):
        t0 = time.time()
        net = _train(group, x_train, y_train, setup, progress)
        seconds = time.time() - t0
        res[group] = {
            "accuracy": [_accuracy(net, xs, y_test, setup.device) for xs in dilated],
            "random_scale_accuracy": _accuracy(net, x_random, y_test, setup.device),
            "params": net.num_parameters(),
            "train_seconds": round(seconds, 1),
        }
        if progress != "none":
            print(f"  {group}: trained in {seconds:.0f} s; accuracy per factor {res[group]['accuracy']}", flush=True)
    res["setup"] = dict(vars(setup))
    res["train_images"], res["test_images"] = len(x_train), len(x_test)
    _plot(Path(path), res, setup)
    return res


def _plot(path: Path, res: dict[str, Any], setup: ScaleSetup) -> None:
    fig, ax = subplots(figsize=(8.0, 4.6))
    styles = {"scale2x3": ("tab:blue", "o", "scale-equivariant (scales 1, 2, 4)"), "scale2x1": ("tab:gray", "s", "z2")}
    for group, (color, marker, label) in styles.items():
        c = res[group]
        ys = [100 * a for a in c["accuracy"]]
        label = f"{label}: {100 * c['random_scale_accuracy']:.1f}% on random scales, {c['params']:,} params"
        ax.plot(res["factors"], ys, marker=marker, color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(res["factors"], [f"{f:.2g}" for f in res["factors"]])
    ax.axhline(10, color="tab:red", linestyle=":", linewidth=1.0, label="chance (10 classes)")
    ax.set_ylim(0, 100)
    ax.set_xlabel("dilation of the test digits (about the centre, bilinear; trained at 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower center", fontsize=9, framealpha=0.95)
    ax.set_title(
        "GSA-Nets trained on unscaled digits, tested on dilated ones\n"
        f"(rotmnist-mini upright: {res['train_images']:,} training images, {setup.epochs} epochs, "
        f"{res['test_images']} test images per factor)",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path)
