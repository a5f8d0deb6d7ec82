"""Matplotlib on the Agg backend, and saving a figure atomically with reproducible bytes."""

from __future__ import annotations

import os
from pathlib import Path

_DPI = 100


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend forced (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, no software metadata) through a temporary file; close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=_DPI, metadata={"Software": None})
    os.replace(tmp, path)
    pyplot().close(fig)
    return path
