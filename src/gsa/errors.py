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
still sees them; ``MissingDependencyError`` is also an :class:`ImportError`. This module imports
nothing from gsa (every layer may raise these).
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
]


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
