"""Published checksums and streaming file verification.

``checksums()`` returns the packaged copy of ``checksums.json`` (published md5/sha1
and sizes of MNIST, rotated MNIST, CIFAR-10 and PCam; sources listed inside).
``verify_file`` hashes a file in 1 MiB chunks and raises :class:`DataError` with a
one-line, actionable message when it is missing, truncated or corrupt.
``verify_file_cached`` does the same but remembers a successful check in a small
``.gsa-verified.json`` next to the file, so multi-GB files are hashed once, not on every run.

A stamp records the file's name, size, mtime, inode and ctime (which no user can set back) and the
expectations it was checked against, signed with an HMAC-SHA256 keyed by the user's private
:func:`gsa.userdirs.stamp_key`. A stamp whose signature does not verify (forged, copied from another
user, or from before signing) or that no longer matches the file is ignored, and the file is hashed.
A stamp is written only once the file's ctime is a timestamp tick old, so that even a write racing
the stamp changes the ctime.
Without a usable key (no private cache directory) nothing is stamped and files are always hashed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from .. import userdirs
from ..errors import DataError

__all__ = ["checksums", "verify_file", "verify_file_cached", "mark_verified", "STAMP_NAME"]

STAMP_NAME = ".gsa-verified.json"
_CHUNK = 1 << 20
_DEFAULT_HINT = "delete it and download it again"


@functools.lru_cache(maxsize=1)
def checksums() -> dict:
    """The packaged ``assets/checksums.json`` as a dict (read once)."""
    text = resources.files("gsa.data").joinpath("assets", "checksums.json").read_text("utf-8")
    return json.loads(text)


def _as_set(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.lower(),)
    return tuple(v.lower() for v in value)


def _describe(md5s: tuple[str, ...], sha1s: tuple[str, ...], size: int | None) -> str:
    parts = []
    if md5s:
        parts.append("md5 " + " or ".join(md5s))
    if sha1s:
        parts.append("sha1 " + " or ".join(sha1s))
    if size is not None:
        parts.append(f"{size:,} bytes")
    return ", ".join(parts) if parts else "a readable file"


def _hash_file(path: Path, algos: tuple[str, ...]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algos}
    size = path.stat().st_size
    bar = None
    if size >= (256 << 20):  # only show progress for big files
        from tqdm.auto import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"checking {path.name}", leave=False)
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                for h in hashers.values():
                    h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return {a: h.hexdigest() for a, h in hashers.items()}


def verify_file(
    path: str | os.PathLike,
    expected_md5: str | Iterable[str] | None = None,
    expected_sha1: str | Iterable[str] | None = None,
    *,
    expected_size: int | None = None,
    hint: str | None = None,
) -> dict[str, str]:
    """Check that ``path`` exists and matches the expected size and checksums.

    Args:
        path: the file.
        expected_md5: hex md5, or several accepted values (any one matches).
        expected_sha1: hex sha1, or several accepted values.
        expected_size: byte size; checked first (cheap), a mismatch means truncated.
        hint: what the user should do, appended to the error message
            (default: "delete it and download it again").

    Returns:
        The computed hex digests, e.g. ``{"md5": "...", "sha1": "..."}`` (only the
        algorithms that were asked for).

    Raises:
        DataError: the file is missing, has the wrong size or a wrong checksum.
    """
    path = Path(path)
    hint = hint or _DEFAULT_HINT
    md5s, sha1s = _as_set(expected_md5), _as_set(expected_sha1)
    want = _describe(md5s, sha1s, expected_size)
    if not path.is_file():
        raise DataError(f"{path}: file is missing (expected {want}); {hint}")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataError(
            f"{path}: file is truncated or incomplete: expected {expected_size:,} bytes"
            f"{' (' + _describe(md5s, sha1s, None) + ')' if md5s or sha1s else ''}, "
            f"found {size:,} bytes; {hint}"
        )
    algos = tuple(a for a, exp in (("md5", md5s), ("sha1", sha1s)) if exp)
    digests = _hash_file(path, algos) if algos else {}
    for algo, exp in (("md5", md5s), ("sha1", sha1s)):
        if exp and digests[algo] not in exp:
            raise DataError(
                f"{path}: file is corrupt: expected {algo} {' or '.join(exp)}, "
                f"found {algo} {digests[algo]} ({size:,} bytes); {hint}"
            )
    return digests


def _identity(path: Path) -> dict:
    """What ties a stamp to the file's content without hashing it: size and mtime, plus the inode and
    ctime, which change when the file is replaced or written and which ``utime`` cannot set back."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _settle(path: Path) -> None:
    """Wait (at most 2 s, usually not at all) until the file's ctime is a whole timestamp tick in the
    past, so that any write after the stamp gives the file a different ctime (cf. git's racy-clean
    entries). Kernel timestamps lag the clock by up to a tick (~10 ms); some filesystems keep whole
    seconds only."""
    ctime = path.stat().st_ctime_ns
    margin = 2_000_000_000 if ctime % 1_000_000_000 == 0 else 20_000_000
    wait = ctime + margin - time.time_ns()
    if wait > 0:
        time.sleep(min(wait, margin) / 1e9)


def _stamp_key(path: Path, md5s, sha1s, size) -> dict:
    return {**_identity(path), "md5": sorted(md5s), "sha1": sorted(sha1s), "expected_size": size}


def _mac(key: bytes, name: str, record: dict) -> str:
    fields = {k: v for k, v in record.items() if k != "mac"}
    message = json.dumps({"name": name, **fields}, sort_keys=True).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _read_stamps(directory: Path) -> dict:
    try:
        stamps = json.loads((directory / STAMP_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _valid_stamp(path: Path) -> dict | None:
    """The stamp of ``path`` if it is genuine (its HMAC verifies with this user's key) and still
    describes the file as it is now (same size, mtime, inode and ctime); else ``None``."""
    key = userdirs.stamp_key()
    stamp = _read_stamps(path.parent).get(path.name)
    if key is None or not isinstance(stamp, dict) or not isinstance(stamp.get("mac"), str):
        return None
    try:
        genuine = hmac.compare_digest(stamp["mac"], _mac(key, path.name, stamp))
        now = _identity(path)
    except (OSError, TypeError, ValueError):  # unreadable file, non-ASCII mac, unserialisable fields
        return None
    return stamp if genuine and all(stamp.get(k) == v for k, v in now.items()) else None


def verify_file_cached(
    path: str | os.PathLike,
    expected_md5: str | Iterable[str] | None = None,
    expected_sha1: str | Iterable[str] | None = None,
    *,
    expected_size: int | None = None,
    hint: str | None = None,
) -> None:
    """Like :func:`verify_file`, but skip hashing when this exact file (same name, size,
    mtime, inode and ctime, same expectations) already passed before.

    The record lives in ``.gsa-verified.json`` in the file's folder, signed with the user's
    :func:`gsa.userdirs.stamp_key`; a record that is forged, stale or unsigned is ignored.
    If the folder is read-only (or there is no key) the file is simply hashed every time.
    """
    path = Path(path)
    md5s, sha1s = _as_set(expected_md5), _as_set(expected_sha1)
    if path.is_file():
        stamp = _valid_stamp(path)
        want = _stamp_key(path, md5s, sha1s, expected_size)
        if stamp is not None and all(stamp.get(k) == want[k] for k in ("md5", "sha1", "expected_size")):
            return
    verify_file(path, md5s or None, sha1s or None, expected_size=expected_size, hint=hint)
    mark_verified(path, md5s or None, sha1s or None, expected_size=expected_size)


def mark_verified(
    path: str | os.PathLike,
    expected_md5: str | Iterable[str] | None = None,
    expected_sha1: str | Iterable[str] | None = None,
    *,
    expected_size: int | None = None,
) -> None:
    """Record that ``path`` (as it is now) matches these expectations, so that
    :func:`verify_file_cached` with the same expectations skips hashing it.
    Use only after the file's digest was checked some other way (e.g. while writing it)."""
    path = Path(path)
    key = userdirs.stamp_key()
    if key is None:  # nothing to sign with: the file will be hashed on every use
        return
    md5s, sha1s = _as_set(expected_md5), _as_set(expected_sha1)
    _settle(path)
    stamps = _read_stamps(path.parent)
    record = _stamp_key(path, md5s, sha1s, expected_size)
    stamps[path.name] = {**record, "mac": _mac(key, path.name, record)}
    tmp = path.parent / f"{STAMP_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, path.parent / STAMP_NAME)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
