"""Published checksums and streaming file verification.

``checksums()`` returns the packaged copy of ``checksums.json`` (published md5/sha1
and sizes of MNIST, rotated MNIST, CIFAR-10 and PCam; sources listed inside).
``verify_file`` hashes a file in 1 MiB chunks and raises :class:`DataError` with a
one-line, actionable message when it is missing, truncated or corrupt.
``verify_file_cached`` does the same but remembers a successful check in a small
``.gsa-verified.json`` next to the file (keyed by name, size and mtime), so multi-GB
files are hashed once, not on every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

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


def _stamp_key(path: Path, md5s, sha1s, size) -> dict:
    st = path.stat()
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "md5": sorted(md5s),
        "sha1": sorted(sha1s),
        "expected_size": size,
    }


def _read_stamps(directory: Path) -> dict:
    try:
        return json.loads((directory / STAMP_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def verify_file_cached(
    path: str | os.PathLike,
    expected_md5: str | Iterable[str] | None = None,
    expected_sha1: str | Iterable[str] | None = None,
    *,
    expected_size: int | None = None,
    hint: str | None = None,
) -> None:
    """Like :func:`verify_file`, but skip hashing when this exact file (same name,
    size and mtime, same expectations) already passed before.

    The record lives in ``.gsa-verified.json`` in the file's folder; if that folder
    is read-only the file is simply hashed every time.
    """
    path = Path(path)
    md5s, sha1s = _as_set(expected_md5), _as_set(expected_sha1)
    if path.is_file():
        stamps = _read_stamps(path.parent)
        if stamps.get(path.name) == _stamp_key(path, md5s, sha1s, expected_size):
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
    md5s, sha1s = _as_set(expected_md5), _as_set(expected_sha1)
    stamps = _read_stamps(path.parent)
    stamps[path.name] = _stamp_key(path, md5s, sha1s, expected_size)
    tmp = path.parent / f"{STAMP_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, path.parent / STAMP_NAME)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
