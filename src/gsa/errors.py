"""The exceptions of gsa: one hierarchy under :class:`GsaError`.

Every user-facing failure derives from :class:`GsaError`; the ``gsa`` command line turns it into a
one-line ``gsa: error: ...`` message (no traceback) and the error's ``exit_code``::

    GsaError                      exit 1
    ├── ConfigError (ValueError)  exit 2   invalid configuration or command-line input
    ├── DataError (ValueError)    exit 1   a dataset file is missing, truncated, corrupt or malformed
    ├── CheckpointError           exit 1   a checkpoint is missing, corrupt or does not match the model
    ├── NonFiniteLossError        exit 3   the training loss became NaN/Inf
    ├── MissingDependencyError    exit 1   an optional dependency (an extra of gsa-nets) is not installed
    └── TrainingInterrupted       exit 130 stopped on Ctrl-C / SIGTERM after saving a checkpoint

``ConfigError`` and ``DataError`` are also :class:`ValueError`, so code that catches ``ValueError``
still sees them; ``MissingDependencyError`` is also an :class:`ImportError`. :func:`one_line` is the
message the command line prints (also for an error re-raised from a DataLoader worker). This module
imports nothing from gsa (every layer may raise these).
"""

from __future__ import annotations

__all__ = [
    "GsaError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "MissingDependencyError",
    "one_line",
]

_WORKER_PREFIX = "Caught "
_WORKER_MARK = " in DataLoader worker process "


class GsaError(Exception):
    """Base class of gsa's user-facing errors (exit code 1 in the CLI)."""

    exit_code = 1


class ConfigError(GsaError, ValueError):
    """Invalid configuration or command-line input (exit code 2)."""

    exit_code = 2


class DataError(GsaError, ValueError):
    """A dataset file is missing, truncated, corrupt or malformed.

    The message is a single line naming the file, what was expected, what was found and what to do
    about it.
    """

    exit_code = 1


class CheckpointError(GsaError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""

    exit_code = 1


class NonFiniteLossError(GsaError):
    """The training loss became NaN/Inf; the last good checkpoint is kept."""

    exit_code = 3

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


class MissingDependencyError(GsaError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it
    (see :mod:`gsa.extras`)."""

    exit_code = 1


class TrainingInterrupted(GsaError):
    """Training stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, as the command line prints it.

    An error raised inside a DataLoader worker reaches the main process re-raised by PyTorch with its
    message replaced by ``"Caught DataError in DataLoader worker process 0. Original Traceback ..."``
    and the worker's whole traceback; the original message (after the traceback's last
    ``module.Class:``) is what is returned then, followed by where it happened."""
    text = str(exc)
    first = text.split("\n", 1)[0]
    if first.startswith(_WORKER_PREFIX) and _WORKER_MARK in first:
        name = type(exc).__name__
        cut = max(text.rfind(f".{name}: "), text.rfind(f"\n{name}: "))
        if cut >= 0:
            where = first[len(_WORKER_PREFIX) + len(name) + 1 :].rstrip(".")
            text = f"{text[text.index(': ', cut) + 2 :]} ({where})"
    return " ".join(text.split())
