"""Console feedback: tqdm bars on a terminal, plain log lines otherwise (files, CI=true)."""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO


def use_bars(mode: str, stream: TextIO) -> bool:
    """tqdm bars for ``mode="auto"`` only on an interactive stdout outside CI."""
    if mode == "bar":
        return True
    if mode != "auto":
        return False
    ci = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not ci


class Progress:
    """Per-epoch progress with running loss / accuracy / images per second.

    ``enabled=False`` (non-zero ranks) silences everything; ``mode="none"`` keeps only
    the one-line messages passed to :meth:`log`.
    """

    def __init__(
        self, mode: str = "auto", *, enabled: bool = True, log_every: int = 0, stream: Optional[TextIO] = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.mode = mode
        self.bars = enabled and use_bars(mode, self.stream)
        self.plain = enabled and not self.bars and mode in {"auto", "plain"}
        self.log_every = log_every
        self._bar = None
        self._every = 1
        self._desc = ""
        self._total = 0
        self._t0 = time.perf_counter()

    def start(self, desc: str, total: int, initial: int = 0) -> None:
        self._desc, self._total = desc, total
        self._t0 = time.perf_counter()
        self._every = self.log_every or max(1, total // 10)
        if self.bars:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True, leave=False, unit="step"
            )

    def update(self, step_in_epoch: int, global_step: int, loss: float, acc: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", img_s=f"{images_per_s:.3g}", refresh=False)
            self._bar.update(1)
        elif self.plain and (step_in_epoch % self._every == 0 or step_in_epoch == self._total):
            self._write(
                f"{self._desc} {step_in_epoch}/{self._total} step {global_step} "
                f"loss {loss:.4f} acc {acc:.4f} {images_per_s:.3g} img/s"
            )

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def log(self, message: str) -> None:
        """A line that is always shown on rank 0 (also with ``--progress none``)."""
        if self.enabled:
            self._write(message)

    def _write(self, message: str) -> None:
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)
