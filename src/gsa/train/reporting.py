"""Final report: ``report.json``, ``rotation.png``, environment facts, rotation / invariance checks."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .checkpoint import atomic_write_bytes

REPORT_FILE = "report.json"
ROTATION_FILE = "rotation.png"

Prepare = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- environment
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        proc = platform.processor() or platform.machine()
        return f"cpu ({proc}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
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
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
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
                x = rotate(x, math.radians(angle))
            logits = model(prepare(x)).float()
            correct += int((logits.argmax(1) == y).sum())
        accs.append(correct / max(1, len(images)))
    return accs


@torch.no_grad()
def invariance_check(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    prepare: Prepare,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Max |logits(x) - logits(rot90^k x)| over k = 1, 2, 3 (exact pixel rotations)."""
    model.eval()
    max_abs, max_logit = 0.0, 0.0
    agree, total = 0, 0
    for i in range(0, len(images), batch_size):
        x = prepare(images[i : i + batch_size].to(device))
        ref = model(x).float()
        max_logit = max(max_logit, float(ref.abs().max()))
        for k in (1, 2, 3):
            out = model(torch.rot90(x, k, dims=(-2, -1))).float()
            max_abs = max(max_abs, float((out - ref).abs().max()))
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            total += len(x)
    return {
        "max_abs_logit_change": max_abs,
        "max_rel_logit_change": max_abs / max_logit if max_logit > 0 else 0.0,
        "prediction_agreement": agree / total if total else math.nan,
        "images": len(images),
    }


def rotation_angles(step: float) -> list[float]:
    """0, step, 2*step, ... < 360 degrees (empty when step is 0)."""
    if step <= 0:
        return []
    n = int(math.floor(360.0 / step + 1e-9))
    return [round(i * step, 6) for i in range(n) if i * step < 360.0 - 1e-9]


def plot_rotation(path: str | os.PathLike, angles: Sequence[float], accs: Sequence[float], title: str) -> Path:
    """Accuracy vs input rotation (0-360 degrees) as a PNG, drawn with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
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
