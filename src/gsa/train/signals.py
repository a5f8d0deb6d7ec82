"""Ctrl-C / SIGTERM during training: finish the step, save a checkpoint, stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, Optional

__all__ = ["StopFlag"]


class StopFlag:
    """Turns SIGINT/SIGTERM into a polite request: finish the step, save, exit.

    A second Ctrl-C raises :class:`KeyboardInterrupt` at once (no save).
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: Optional[str] = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        """Handle SIGINT/SIGTERM with this flag inside the ``with`` block (main thread only;
        elsewhere the signals are left alone); the previous handlers are restored after it."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):
                pass
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()
