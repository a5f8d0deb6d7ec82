"""A run directory for one run at a time: created atomically, locked while the run lives.

* :func:`make_run_dir` creates the directory; a default (timestamped) name is claimed with a
  ``mkdir`` that fails when the name is taken (then ``-2``, ``-3``, ... is tried), so two runs
  started in the same second get different directories. A path that is a file, or where nothing
  can be created (read-only, full disk), is a one-line :class:`~gsa.errors.ConfigError`.
* :class:`RunLock` holds an exclusive OS lock on ``<run dir>/.gsa.lock`` for the life of a run
  (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows; a warning where neither exists). The
  operating system drops the lock when its process ends, however it ends, so a killed run never
  leaves a stale lock. A second run on a locked directory fails at once, naming the holder's pid
  and host. The lock file is removed when the lock is released.
* :func:`name_part` turns a recipe, dataset spec or group into one safe part of a default
  directory name (``folder:/a/b`` -> ``folder-b``, ``npz:x.npz`` -> ``npz-x``): no ``/``, ``:``
  or other character that is not a letter, digit, ``.``, ``_`` or ``-``.
* :func:`other_run_files` lists what another run left in a directory (``config.json``, weights,
  ``metrics.csv``, ``report.json``, ...): a new run refuses such a directory.

:func:`claim` does the first two on rank 0 of a distributed job and gives every rank the outcome.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, GsaError
from . import checkpoint as ckpt
from . import distributed as D
from .config import CONFIG_FILE
from .metrics import CSV_FILE
from .reporting import REPORT_FILE, ROTATION_FILE

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RUN_FILES", "RunLock", "make_run_dir", "name_part", "other_run_files", "claim"]

LOCK_FILE = ".gsa.lock"
#: what a run writes into its directory (``tb``: TensorBoard events)
RUN_FILES = (CONFIG_FILE, ckpt.BEST, ckpt.LAST, ckpt.STATE, CSV_FILE, REPORT_FILE, ROTATION_FILE, "tb")
_WINDOWS_LOCK_OFFSET = 1 << 20  # msvcrt locks a byte range; lock one far from the holder's line


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_PART_MAX = 40


def name_part(text: str) -> str:
    """``text`` as one part of a directory name, safe on every file system: a dataset spec
    ``KIND:PATH`` becomes ``KIND-<last component of PATH, without its suffix>``; every run of other
    characters than letters, digits, ``.``, ``_`` and ``-`` becomes one ``-``; at most 40
    characters, never empty (``"data"``), never starting or ending with ``.`` or ``-``."""
    kind, sep, where = str(text).partition(":")
    if sep and len(kind) > 1:  # "folder:/a/b", "npz:x.npz" (not a Windows drive letter "C:")
        text = f"{kind}-{Path(where.replace(chr(92), '/').rstrip('/')).stem}"
    part = _UNSAFE.sub("-", str(text))[:_NAME_PART_MAX].strip(".-")
    return part or "data"


def make_run_dir(path: str | os.PathLike, *, fresh: bool) -> tuple[Path, bool]:
    """Create the run directory; returns ``(directory, whether it was created here)``.

    ``fresh=True`` (a default name): ``path`` if it does not exist yet, else ``path-2``,
    ``path-3``, ... -- each claimed by an atomic ``mkdir``. Otherwise ``path`` may already be a
    directory. Raises :class:`ConfigError` when ``path`` is a file or cannot be created.
    """
    path = Path(path)
    if not fresh and path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory; choose another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh:
            created = not path.is_dir()
            path.mkdir(exist_ok=True)
            return path, created
        for n in range(1, 1000):
            candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
            try:
                candidate.mkdir()
                return candidate, True
            except FileExistsError:
                continue
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {path} ({_reason(exc)}); choose another --out") from None
    raise ConfigError(f"cannot create the run directory {path}: 999 runs with this name already exist")


def other_run_files(run_dir: str | os.PathLike) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir`` (empty when it does not exist)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


class RunLock:
    """An exclusive, process-lifetime lock on a run directory (``<run_dir>/.gsa.lock``).

    :meth:`acquire` raises :class:`ConfigError` when another run holds it (naming its pid and host);
    :meth:`release` (idempotent) drops it and removes the lock file. ``created_dir`` remembers
    whether the directory was made for this run, so that a run failing during set-up can
    remove its empty directory again (``release(remove_empty_dir=True)``).
    """

    def __init__(self) -> None:
        self.run_dir: Optional[Path] = None
        self.created_dir = False
        self._fh = None

    @property
    def held(self) -> bool:
        """Whether this object holds the OS lock now."""
        return self._fh is not None

    def acquire(self, run_dir: str | os.PathLike) -> "RunLock":
        """Lock ``run_dir`` (an existing directory) for this process, without waiting."""
        self.run_dir = Path(run_dir)
        if fcntl is None and msvcrt is None:
            warnings.warn(
                f"gsa: cannot lock {self.run_dir}: no file locking on this platform; "
                "two runs in this directory at once would not be detected",
                stacklevel=2,
            )
            return self
        path = self.run_dir / LOCK_FILE
        for _ in range(10):  # the holder removes the file when it ends: retry if it went away under us
            try:
                fh = open(path, "a+b", buffering=0)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write to the run directory {self.run_dir} ({_reason(exc)}); choose another --out"
                ) from None
            if not _try_lock(fh, self.run_dir):
                holder = _read_holder(fh)
                fh.close()
                raise ConfigError(
                    f"{self.run_dir} is in use by another gsa run{holder}; wait for it to finish "
                    "or choose another --out"
                )
            if _is_current(fh, path):
                self._fh = fh
                self._write_holder()
                return self
            fh.close()
        raise ConfigError(f"cannot lock {path}: it keeps being replaced")

    def _write_holder(self) -> None:
        fh = self._fh
        try:
            fh.truncate(0)
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as exc:
            self.release()
            raise ConfigError(
                f"cannot write to the run directory {self.run_dir} ({_reason(exc)}); choose another --out"
            ) from None

    def release(self, remove_empty_dir: bool = False) -> None:
        """Drop the lock and remove the lock file; with ``remove_empty_dir``, also the directory
        when this run created it and nothing else is in it."""
        fh, self._fh = self._fh, None
        if fh is not None:
            path = self.run_dir / LOCK_FILE
            if msvcrt is None:  # POSIX: unlink while locked, so no one locks a file about to vanish
                _unlink(path)
                fh.close()
            else:  # Windows cannot remove an open file: close it first (removal fails if another run opened it)
                _unlock_windows(fh)
                fh.close()
                _unlink(path)
        if remove_empty_dir and self.created_dir and self.run_dir is not None:
            self.created_dir = False
            try:
                self.run_dir.rmdir()
            except OSError:
                pass  # not empty (or gone): leave it


def claim(run_dir: Path, lock: RunLock, *, fresh: bool, resume: bool, dist: D.DistInfo) -> Path:
    """Rank 0 creates ``run_dir`` (see :func:`make_run_dir`) and locks it with ``lock``; every rank
    gets the directory, or the same :class:`ConfigError`.

    When resuming, a missing directory is neither created nor locked (the caller reports it).
    """
    result, error = None, None
    if dist.is_main:
        try:
            if resume and not run_dir.is_dir():
                result = str(run_dir)
            else:
                path, lock.created_dir = make_run_dir(run_dir, fresh=fresh)
                lock.acquire(path)
                result = str(path)
        except GsaError as exc:
            error = str(exc)
    result, error = D.broadcast_object((result, error), dist)
    if error is not None:
        raise ConfigError(error)
    return Path(result)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _try_lock(fh, run_dir: Path) -> bool:
    """Lock ``fh`` without waiting: ``False`` when another process holds it. A file system without
    locks (some network mounts) gives a warning and ``True``."""
    try:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fh.seek(_WINDOWS_LOCK_OFFSET)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if msvcrt is not None:  # Windows: a region locked by another process
            return False
        warnings.warn(
            f"gsa: cannot lock {run_dir} ({_reason(exc)}); two runs in this directory at once would not be detected",
            stacklevel=3,
        )
        return True


def _unlock_windows(fh) -> None:
    try:
        fh.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
    except OSError:
        pass  # closing the file drops it too


def _is_current(fh, path: Path) -> bool:
    """Whether the locked file is still the one at ``path`` (its holder may have removed it)."""
    try:
        a, b = os.fstat(fh.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fh) -> str:
    try:
        fh.seek(0)
        text = fh.read(200).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f" ({' '.join(text.split())})" if text else ""


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
