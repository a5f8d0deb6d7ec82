"""Metric accumulation (exact over processes) and per-epoch logs: metrics.csv + TensorBoard."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..extras import require
from .distributed import DistInfo, all_reduce_sum

CSV_FILE = "metrics.csv"
CSV_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "valid_loss",
    "valid_acc",
    "lr",
    "epoch_seconds",
    "images_per_s",
    "best_valid_acc",
)


@dataclass
class Meter:
    """Sums of loss and correct predictions over a number of samples."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        """Accumulate a batch (``loss`` is the batch mean)."""
        n = labels.shape[0]
        self.loss_sum += float(loss.detach()) * n
        self.correct += float((logits.detach().argmax(dim=1) == labels).sum())
        self.count += n

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else math.nan

    def reduced(self, device: torch.device, info: DistInfo) -> "Meter":
        """The meter summed over all processes."""
        s = all_reduce_sum([self.loss_sum, self.correct, self.count], device, info)
        return Meter(*s)

    def state(self) -> dict[str, float]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}


class CsvLog:
    """Append-only ``metrics.csv`` (header written once; survives resumes)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / CSV_FILE

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (and the header to a new file), flushed to disk. A failed write (a full
        disk) cuts the file back to its previous rows before the ``OSError`` propagates."""
        size = self.path.stat().st_size if self.path.exists() else 0
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if size == 0:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
        data = memoryview(text.getvalue().encode("utf-8"))
        with open(self.path, "ab", buffering=0) as fh:  # unbuffered: nothing is left to flush on close
            try:
                while data:
                    data = data[fh.write(data) :]
                os.fsync(fh.fileno())
            except OSError:
                fh.truncate(size)  # no half row for the next append to continue
                raise


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def require_tensorboard() -> None:
    """Check that TensorBoard is installed (:class:`~gsa.errors.MissingDependencyError` naming the
    extra and ``--no-tensorboard`` otherwise)."""
    require("tensorboard", "TensorBoard logging (--no-tensorboard turns it off)")


class TensorBoardLog:
    """Scalars under ``<run>/tb`` via :mod:`torch.utils.tensorboard` (a no-op when not ``enabled``).

    Raises:
        MissingDependencyError: ``enabled`` but TensorBoard is not installed (the ``[train]`` extra).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def scalars(self, values: Mapping[str, Optional[float]], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
