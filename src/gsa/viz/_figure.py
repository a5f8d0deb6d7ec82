"""Figures on their own Agg canvas (matplotlib's global backend is left as it is), and saving a
figure atomically with reproducible bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..extras import require

_DPI = 100


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any):
    """A new :class:`matplotlib.figure.Figure` on an Agg canvas and its axes (``Figure.subplots``
    with ``kwargs``); nothing is registered with ``pyplot``, so nothing needs closing.

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``[train]`` extra).
    """
    figure = require("matplotlib.figure", "drawing figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure.Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, no software metadata) through a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=_DPI, metadata={"Software": None})
    os.replace(tmp, path)
    return path
