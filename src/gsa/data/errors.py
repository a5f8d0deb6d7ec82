"""The one exception type of :mod:`gsa.data`."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file is missing, truncated, corrupt or malformed.

    The message is a single line naming the file, what was expected, what was
    found and what to do about it. Subclasses :class:`ValueError`, so callers
    that only catch ``ValueError`` still see it.
    """
