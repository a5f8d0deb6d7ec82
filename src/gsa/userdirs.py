"""The user's private gsa files: safe cache directories and the key that signs dataset stamps.

gsa keeps two kinds of per-user state that another user must not be able to plant or forge: the
compiled native kernels (:mod:`gsa.nn.native`, loaded into the process) and the "verified" stamps of
large dataset files (:mod:`gsa.data.checksums`, which let gsa skip hashing them). Both trust a
directory only if it is owned by the current user and not writable by group or others
(:func:`private_dir`), and a file only if it is also a regular file owned by the user
(:func:`why_not_private`). :func:`stamp_key` is a random 32-byte secret kept in
``<cache root>/stamp.key`` (mode ``0o600``), created on first use.

The cache root is the platform's user cache folder for gsa (:func:`cache_root`, from
:mod:`platformdirs`): ``$XDG_CACHE_HOME/gsa``, else ``~/.cache/gsa`` on Linux;
``~/Library/Caches/gsa`` on macOS; ``%LOCALAPPDATA%\\gsa\\Cache`` on Windows. Below it:
``kernels`` (:func:`kernel_dir`, or ``$GSA_CACHE_DIR``) and ``data`` (:func:`data_dir`, or
``$GSA_DATA_DIR``). This module imports nothing from ``gsa`` (every layer may use it).
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Optional

import platformdirs

__all__ = [
    "NotPrivate",
    "cache_root",
    "kernel_dir",
    "data_dir",
    "private_dir",
    "why_not_private",
    "stamp_key",
    "KEY_NAME",
]

#: file name of the stamp key inside :func:`cache_root`
KEY_NAME = "stamp.key"
_KEY_BYTES = 32


class NotPrivate(OSError):
    """A directory or file that gsa must not trust: owned by someone else or writable by others."""


def cache_root() -> Path:
    """The root of the user's gsa caches: the platform's user cache folder for ``gsa``
    (``$XDG_CACHE_HOME/gsa``, else ``~/.cache/gsa`` on Linux; see the module's docstring)."""
    return Path(platformdirs.user_cache_dir("gsa", appauthor=False))


def kernel_dir() -> Path:
    """Where the native CPU kernels are built and cached: ``$GSA_CACHE_DIR``, else
    ``<cache root>/kernels``."""
    env = os.environ.get("GSA_CACHE_DIR")
    return Path(env).expanduser() if env else cache_root() / "kernels"


def data_dir() -> Path:
    """Where datasets are looked up and downloaded by default: ``$GSA_DATA_DIR``, else
    ``<cache root>/data``."""
    env = os.environ.get("GSA_DATA_DIR")
    return Path(env).expanduser() if env else cache_root() / "data"


def _euid() -> Optional[int]:
    return os.geteuid() if hasattr(os, "geteuid") else None  # no owners to compare on Windows


def why_not_private(path: Path, *, directory: bool = False, secret: bool = False) -> Optional[str]:
    """Why ``path`` cannot be trusted (``None``: it can): it must be a directory (``directory``)
    or a regular file (not a symbolic link), owned by the current user, not writable by group or
    others, and for a ``secret`` not readable by them either. Raises :class:`OSError` if it is missing."""
    st = os.stat(path) if directory else os.lstat(path)
    if directory and not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    uid = _euid()
    if uid is not None and st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, not by the current user (uid {uid})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & (0o077 if secret else 0o022):
        what = "accessible" if secret else "writable"
        return f"{path} is {what} by group or others (mode {mode:o})"
    return None


def private_dir(path: str | os.PathLike) -> Path:
    """``path``, created with mode ``0o700`` if missing (parents as usual), after checking that it is
    owned by the current user and not writable by group or others.

    Raises:
        NotPrivate: the directory exists but fails that check (it is left as it is).
        OSError: it cannot be created.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    reason = why_not_private(path, directory=True)
    if reason:
        raise NotPrivate(reason)
    return path


def _read_key(path: Path) -> Optional[bytes]:
    if why_not_private(path, secret=True):
        return None
    data = path.read_bytes()
    return data if len(data) == _KEY_BYTES else None


def stamp_key() -> Optional[bytes]:
    """The user's secret for signing dataset stamps (32 random bytes in ``<cache root>/stamp.key``,
    mode ``0o600``), created on first use; ``None`` when it cannot be kept safely (the cache root is
    not private, the file is not the user's own ``0o600`` file, or nothing can be written)."""
    try:
        root = private_dir(cache_root())
        path = root / KEY_NAME
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".stamp-key-")  # mode 0o600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(_KEY_BYTES))
                os.link(tmp, path)  # atomic; a concurrent creator's key wins and is read below
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return _read_key(path)
    except OSError:
        return None
