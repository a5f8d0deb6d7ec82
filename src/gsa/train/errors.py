"""Exceptions raised by the training engine.

Every user-facing failure derives from :class:`GsaError`; the CLI turns it into a
one-line ``error: ...`` message (no traceback) and a non-zero exit code.
"""

from __future__ import annotations


class GsaError(Exception):
    """Base class of the engine's user-facing errors (exit code 1 in the CLI)."""

    exit_code = 1


class ConfigError(GsaError, ValueError):
    """Invalid configuration or command-line input (exit code 2)."""

    exit_code = 2


class CheckpointError(GsaError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""

    exit_code = 1


class NonFiniteLossError(GsaError):
    """The training loss became NaN/Inf; the last good checkpoint is kept."""

    exit_code = 3

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


class TrainingInterrupted(GsaError):
    """Training stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step
