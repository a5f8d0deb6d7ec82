"""Regenerate the figures of the documentation: ``gsa figures`` or ``python -m gsa.viz``.

:func:`add_arguments` adds the options of the command to a parser (``gsa figures`` uses it in
:mod:`gsa.cli`), :func:`run` makes the figures they select, :func:`main` is ``python -m gsa.viz``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .layers import lifting_figure, steerability_figure
from .rotation import RotationSetup, rotation_accuracy_figure
from .scale import ScaleSetup, scale_accuracy_figure

__all__ = ["FIGURES", "add_arguments", "run", "main"]

#: Names of the figures, in the order they are made (file ``<name>.png``).
FIGURES: tuple[str, ...] = ("lifting", "steerability", "rotation_accuracy", "scale_accuracy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of the figures command to ``p`` (used by ``gsa figures`` too)."""
    p.add_argument("--out", default="docs/figures", help="output folder (default: docs/figures)")
    p.add_argument("--only", default=None, metavar="NAMES", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true", help="tiny models and subsets: seconds, for smoke tests")
    p.add_argument("--z2-run", default=None, metavar="DIR", help="gsa train run of a z2 model to evaluate")
    p.add_argument("--p4-run", default=None, metavar="DIR", help="gsa train run of a p4 model to evaluate")
    p.add_argument(
        "--train-images",
        type=int,
        default=None,
        metavar="N",
        help=(
            f"training images for the models trained here (default {RotationSetup.train_images}; "
            f"scale_accuracy: {ScaleSetup.train_images})"
        ),
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs (default {RotationSetup.epochs}; scale_accuracy: {ScaleSetup.epochs})",
    )
    p.add_argument(
        "--rotation-step",
        type=float,
        default=None,
        metavar="DEG",
        help=f"angle step of the accuracy curve (default {RotationSetup.rotation_step:g})",
    )
    p.add_argument(
        "--rotation-images",
        type=int,
        default=None,
        metavar="N",
        help=f"test images per angle (default {RotationSetup.rotation_images})",
    )
    p.add_argument("--device", default=None, help="device for training/evaluation (default cpu)")
    p.add_argument(
        "--work-dir",
        default=None,
        metavar="DIR",
        help="keep the trained runs and the upright dataset here (default: a temporary folder)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="plain",
        help="training progress display (default plain)",
    )
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Make the figures selected by parsed ``args`` (see :func:`add_arguments`); returns 0."""
    names = FIGURES if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    bad = [n for n in names if n not in FIGURES]
    if bad:
        from ..errors import ConfigError

        raise ConfigError(f"unknown figure(s) {', '.join(bad)}; choose from: {', '.join(FIGURES)}")
    setup = RotationSetup.quick() if args.quick else RotationSetup()
    for name, value in (
        ("train_images", args.train_images),
        ("epochs", args.epochs),
        ("rotation_step", args.rotation_step),
        ("rotation_images", args.rotation_images),
        ("device", args.device),
    ):
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
        elif name == "scale_accuracy":
            res = scale_accuracy_figure(target, setup=_scale_setup(args), progress=args.progress)
        else:
            res = rotation_accuracy_figure(
                target,
                z2_run=args.z2_run,
                p4_run=args.p4_run,
                setup=setup,
                work_dir=args.work_dir,
                progress=args.progress,
            )
            for g in ("z2", "p4"):
                c = res[g]
                mean = sum(c["accuracy"]) / len(c["accuracy"])
                print(
                    f"  {g}: accuracy at 0° {100 * c['accuracy'][0]:.1f}%, mean over angles {100 * mean:.1f}% "
                    f"({c['images']} test images per angle)",
                    flush=True,
                )
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


def _scale_setup(args: argparse.Namespace) -> ScaleSetup:
    """The :class:`ScaleSetup` of ``args``: ``--quick``, ``--train-images``, ``--epochs``, ``--device``, ``--seed``."""
    setup = ScaleSetup.quick() if args.quick else ScaleSetup()
    for name in ("train_images", "epochs", "device"):
        if getattr(args, name) is not None:
            setattr(setup, name, getattr(args, name))
    setup.seed = args.seed
    return setup


def _without_runs(res: dict[str, Any]) -> dict[str, Any]:
    """``res`` without the (temporary, machine-specific) run directories."""
    return {k: (_without_runs(v) if isinstance(v, dict) else v) for k, v in res.items() if k != "run"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m gsa.viz``: parse ``argv`` and make the figures."""
    parser = argparse.ArgumentParser(prog="python -m gsa.viz", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)
