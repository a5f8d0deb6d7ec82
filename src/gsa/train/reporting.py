"""Final report: ``report.json``, ``rotation.png``, environment facts, rotation / invariance checks.

``report.json`` is assembled from sections, each a function of plain values (numbers, the
config, the saved training position): :func:`summarize_test`, :func:`summarize_progress`,
:func:`summarize_timing`, :func:`summarize_environment`, :func:`summarize_run`, then the rotation and
invariance checks; :func:`build_report` joins them (in that key order) and adds the provenance.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .. import groups as _groups
from .. import openmp
from ..equivariance import exact_elements
from ..extras import require
from .checkpoint import BEST, atomic_write_bytes
from .config import TrainConfig
from .metrics import Meter

REPORT_FILE = "report.json"
ROTATION_FILE = "rotation.png"

Prepare = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- environment
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        proc = platform.processor() or platform.machine()
        return (
            f"cpu ({proc}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"OpenMP wait {openmp.wait_policy()})"
        )
    return str(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max_memory_allocated, or the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return int(rss * scale), "cpu_peak_rss"
    except (ImportError, OSError):
        return -1, "unavailable"


def git_commit() -> Optional[str]:
    """The commit of the gsa source checkout (None when not a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or len(sha) < 7:
        return None
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return sha + ("-dirty" if dirty else "")


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- checks
@torch.no_grad()
def rotation_curve(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    angles_deg: Sequence[float],
    *,
    rotate: Callable[[torch.Tensor, float], torch.Tensor],
    prepare: Prepare,
    batch_size: int,
    device: torch.device,
) -> list[float]:
    """Accuracy on ``images`` rotated by each angle (images in [0, 1], rotated before ``prepare``)."""
    model.eval()
    accs = []
    for angle in angles_deg:
        correct = 0
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            y = labels[i : i + batch_size].to(device)
            if angle % 360:
                x = rotate(x, angle)
            logits = model(prepare(x)).float()
            correct += int((logits.argmax(1) == y).sum())
        accs.append(correct / max(1, len(images)))
    return accs


def invariance_transforms(group: Any) -> tuple[_groups.Group, list[int], str]:
    """``(group, elements, words)``: the transformations :func:`invariance_check` applies.

    The group's exact elements other than the identity (its quarter turns and mirrors: pixel
    permutations, under which a GSA-Net's logits change by round-off only). A group without any
    (``z2``, ``p3``, ``p5``, ...) is checked under the three quarter turns of ``p4`` instead, which
    it is not built to be invariant to: then the check measures, and the words say so.

    Example:
        >>> invariance_transforms("p6m")[1:]
        ([3, 6, 9], '180-degree rotation and mirrors')
    """
    g = _groups.get(group)
    elements = [e for e in exact_elements(g) if e]
    if not elements:
        return _groups.get("p4"), [1, 2, 3], f"90-degree rotations (not in {g.name})"
    turns = {g.angle(e) for e in elements if not g.is_mirrored(e)}
    words = ["90-degree rotations" if 90.0 in turns else "180-degree rotation"] if turns else []
    if any(g.is_mirrored(e) for e in elements):
        words.append("mirrors" if len(elements) > 1 else "the mirror")
    return g, elements, " and ".join(words)


@torch.no_grad()
def invariance_check(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    prepare: Prepare,
    batch_size: int,
    device: torch.device,
    group: Any = "p4",
) -> dict[str, Any]:
    """Max |logits(x) - logits(g·x)| over the exact transformations ``g`` of ``group``.

    ``g`` runs over :func:`invariance_transforms` (pixel permutations: quarter turns, mirrors);
    ``under`` in the result names them. ``images`` are ``(N, C, X, Y)`` in [0, 1], transformed
    after ``prepare``.
    """
    model.eval()
    g, elements, words = invariance_transforms(group)
    max_abs, max_logit = 0.0, 0.0
    agree, total = 0, 0
    for i in range(0, len(images), batch_size):
        x = prepare(images[i : i + batch_size].to(device))
        ref = model(x).float()
        max_logit = max(max_logit, float(ref.abs().max()))
        for e in elements:
            out = model(_groups.act_on_image(g, e, x)).float()
            max_abs = max(max_abs, float((out - ref).abs().max()))
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            total += len(x)
    return {
        "max_abs_logit_change": max_abs,
        "max_rel_logit_change": max_abs / max_logit if max_logit > 0 else 0.0,
        "prediction_agreement": agree / total if total else math.nan,
        "images": len(images),
        "under": words,
    }


def rotation_angles(step: float) -> list[float]:
    """0, step, 2*step, ... < 360 degrees (empty when step is 0)."""
    if step <= 0:
        return []
    n = int(math.floor(360.0 / step + 1e-9))
    return [round(i * step, 6) for i in range(n) if i * step < 360.0 - 1e-9]


def require_matplotlib():
    """:mod:`matplotlib.figure`, or :class:`~gsa.errors.MissingDependencyError` naming the extra."""
    return require("matplotlib.figure", "the rotation plot (rotation.png; --rotation-step 0 turns it off)")


def plot_rotation(path: str | os.PathLike, angles: Sequence[float], accs: Sequence[float], title: str) -> Path:
    """Accuracy vs input rotation (0-360 degrees) as a PNG, drawn on its own Agg canvas (matplotlib's
    backend is left as it is).

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``[train]`` extra).
    """
    Figure = require_matplotlib().Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    xs = list(angles) + ([360.0] if angles and angles[0] == 0 else [])
    ys = [100 * a for a in accs] + ([100 * accs[0]] if angles and angles[0] == 0 else [])
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, marker="o", markersize=3)
    for a in range(90, 360, 90):
        ax.axvline(a, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlim(0, 360)
    ax.set_xticks(range(0, 361, 45))
    lo = min(ys) if ys else 0.0
    ax.set_ylim(max(0.0, lo - 5), 100.5)
    ax.set_xlabel("input rotation angle (degrees)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def write_report(run_dir: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / REPORT_FILE
    atomic_write_bytes(path, (json.dumps(jsonable(report), indent=2) + "\n").encode())
    return path


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: mappings/sequences recursively, tensors as lists,
    non-finite floats as ``None``, anything else unknown as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- assembling report.json
def patch_label(patch_size: int | None) -> str:
    """``"global"`` for patch size None (global attention), else ``"KxK"``."""
    return "global" if patch_size is None else f"{patch_size}x{patch_size}"


def rotation_title(cfg: TrainConfig, images: int) -> str:
    """Title of ``rotation.png``: the model and the number of test images."""
    return f"{cfg.preset} GSA-Net, group {cfg.group}, {patch_label(cfg.patch_size)} (n={images})"


def summarize_rotation(angles: Sequence[float], accuracy: Sequence[float], images: int) -> dict[str, Any]:
    """The ``"rotation"`` entry: accuracy per input rotation angle (degrees) on ``images`` images."""
    return {"angles_deg": angles, "accuracy": accuracy, "images": images}


def summarize_test(test: Meter) -> dict[str, Any]:
    """Accuracy, loss and size of the test evaluation (the meter summed over processes)."""
    return {"test_accuracy": test.accuracy, "test_loss": test.loss, "test_images": int(test.count)}


def summarize_progress(position: Mapping[str, Any], steps_per_epoch: int, stopped: str) -> dict[str, Any]:
    """Best epoch, steps done and why training stopped.

    ``position`` is the training position as saved in ``last.state.pt`` (``best_acc``,
    ``best_epoch``, ``best_step``, ``epoch``, ``step``, ``skipped_steps``, ...); a best value of
    -1 (no validation yet) becomes ``None``.
    """
    best_acc, best_epoch, best_step = position["best_acc"], position["best_epoch"], position["best_step"]
    return {
        "best_valid_accuracy": best_acc if best_acc >= 0 else None,
        "best_epoch": best_epoch if best_epoch >= 0 else None,
        "best_step": best_step if best_step >= 0 else None,
        "epochs_completed": position["epoch"],
        "steps": position["step"],
        "steps_per_epoch": steps_per_epoch,
        "stopped": stopped,
        "amp_skipped_steps": position["skipped_steps"],
    }


def summarize_timing(position: Mapping[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """Seconds per epoch (mean over full epochs, else extrapolated from the steps done) and throughput.

    ``position`` as in :func:`summarize_progress` (``epoch_seconds``, ``train_seconds``,
    ``train_images``, ``step``).
    """
    full = position["epoch_seconds"]
    train_seconds = position["train_seconds"]
    if full:
        sec_per_epoch = sum(full) / len(full)
    elif position["step"]:
        sec_per_epoch = train_seconds / position["step"] * steps_per_epoch  # extrapolated from the steps done
    else:
        sec_per_epoch = math.nan
    return {
        "seconds_per_epoch": sec_per_epoch,
        "seconds_per_epoch_extrapolated": not full,
        "train_seconds": train_seconds,
        "images_per_s": position["train_images"] / train_seconds if train_seconds else None,
    }


def summarize_environment(device: torch.device, world_size: int, precision: str) -> dict[str, Any]:
    """Peak memory so far, device, number of processes, precision and PyTorch version."""
    peak, peak_kind = peak_memory_bytes(device)
    return {
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": str(device),
        "device_name": device_name(device),
        "world_size": world_size,
        "precision": precision,
        "torch_version": torch.__version__,
    }


def summarize_run(cfg: TrainConfig, param_count: int, eval_limit: Optional[int]) -> dict[str, Any]:
    """The model and dataset of the run, and how the test split was evaluated."""
    return {
        "param_count": param_count,
        "preset": cfg.preset,
        "group": cfg.group,
        "patch_size": cfg.patch_size,
        "dataset": cfg.dataset,
        "recipe": cfg.recipe,
        "eval": {
            "split": "test",
            "limit": eval_limit,
            "batch_size": cfg.effective_eval_batch_size(),
            "checkpoint": BEST,
        },
    }


def build_report(*sections: Mapping[str, Any]) -> dict[str, Any]:
    """The report: ``sections`` merged in order, then ``git_commit`` and ``finished_at``."""
    report: dict[str, Any] = {}
    for section in sections:
        report.update(section)
    report["git_commit"] = git_commit()
    report["finished_at"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return report


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The console summary of a report: test accuracy and, when checked, rotation invariance."""
    best = "n/a"
    if report["best_epoch"] is not None:
        best = f"epoch {report['best_epoch']} (valid {100 * report['best_valid_accuracy']:.2f}%)"
    lines = [
        f"test accuracy {100 * report['test_accuracy']:.2f}% (loss {report['test_loss']:.4f}, {report['test_images']} images) "
        f"with the best-on-valid weights from {best}"
    ]
    inv = report.get("invariance")
    if inv:
        lines.append(
            f"invariance check: max |logit change| under {inv.get('under', '90-degree rotations')} "
            f"{inv['max_abs_logit_change']:.2e} "
            f"(relative {inv['max_rel_logit_change']:.2e}, predictions agree {100 * inv['prediction_agreement']:.1f}%)"
        )
    return lines
