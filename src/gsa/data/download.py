"""Downloading with verification. Only ever called when the user asked for it
(``download=True`` / ``--download``); nothing in :mod:`gsa.data` touches the network
otherwise.

``open_url`` is the single point where the network is reached; tests replace it
(``monkeypatch.setattr(gsa.data.download, "open_url", fake)``) to serve local bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError

__all__ = ["open_url", "download_file"]

_CHUNK = 1 << 20


def open_url(url: str, timeout: float = 60.0):
    """Open ``url`` for reading (a file-like with ``read(n)`` and, optionally, ``headers``)."""
    request = urllib.request.Request(url, headers={"User-Agent": "gsa-data/0.1"})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (official https/http URLs only)


def _accepted(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value.lower(),) if isinstance(value, str) else tuple(v.lower() for v in value)


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | Iterable[str] | None = None,
    sha1: str | Iterable[str] | None = None,
    size: int | None = None,
) -> Path:
    """Fetch ``url`` into ``dest`` with a progress bar, verify it, then rename atomically.

    The bytes go to a temporary file in ``dest``'s folder, are hashed while they stream
    in, and replace ``dest`` only if the size and checksums match, so an interrupted or
    corrupt download never leaves a file under the final name.

    Raises:
        DataError: the download failed or its size/checksum is wrong.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    md5s, sha1s = _accepted(md5), _accepted(sha1)
    hashers = {"md5": hashlib.md5(), "sha1": hashlib.sha1()}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    manual = f"check the network, or download it by hand from {url} into {dest.parent}"
    got = 0
    try:
        try:
            response = open_url(url)
        except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
            raise DataError(f"{dest}: could not download {url}: {exc}; {manual}") from exc
        try:
            header = getattr(response, "headers", None)
            length = header.get("Content-Length") if header is not None else None
            total = int(length) if length and str(length).isdigit() else size
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar,
            ):
                fd = -1
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            raise DataError(f"{dest}: download of {url} failed after {got:,} bytes: {exc}; {manual}") from exc
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        if size is not None and got != size:
            raise DataError(f"{dest}: download from {url} is truncated: expected {size:,} bytes, got {got:,}; {manual}")
        for algo, exp in (("md5", md5s), ("sha1", sha1s)):
            found = hashers[algo].hexdigest()
            if exp and found not in exp:
                raise DataError(
                    f"{dest}: download from {url} is corrupt: expected {algo} {' or '.join(exp)}, "
                    f"found {algo} {found} ({got:,} bytes); {manual}"
                )
        os.replace(tmp, dest)
    except BaseException:
        if fd != -1:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return dest
