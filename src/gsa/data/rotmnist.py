"""Rotated MNIST: the embedded stand-in ``rotmnist-mini`` and the real ``mnist_rotation_new``.

``rotmnist-mini`` ships with the package (``assets/rotmnist_mini.npz``, built by
``tools/build_rotmnist_mini.py``; see ``assets/ROTMNIST_MINI.md``): 10,000 MNIST test
digits rotated by random angles, split 7,000 / 1,000 / 2,000. It is a smoke-test and
demo set, **not** the benchmark.

``rotmnist`` is the benchmark of Larochelle et al. (2007), ``mnist_rotation_new.zip``
with two whitespace-separated text files (one digit per row: 784 floats in [0, 1],
then the label):

* ``mnist_all_rotation_normalized_float_train_valid.amat``: 12,000 rows; the first
  10,000 are ``train``, the last 2,000 ``valid`` (the original GSA-Nets code dropped
  these and selected its model on the test set; we keep them for model selection);
* ``mnist_all_rotation_normalized_float_test.amat``: 50,000 rows, ``test``.

Orientation: each row is reshaped row-major to 28x28 with **no transpose**, like the
original GSA-Nets and G-CNN loaders and skdata (which transposes some other Larochelle
variants, e.g. ``mnist_background_images``, but not this one). Since the digits are
rotated uniformly at random this choice does not affect rotation-invariant models;
it only fixes the mirror image a plot shows.

The parsed arrays are cached as ``mnist_rotation_new.npz`` next to the source file
(uint8 when the text values are multiples of 1/255, else float32), so the slow text
parse happens once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import _rotmnist_mini_meta as mini_meta
from .base import ArrayDataset, DatasetInfo, candidate_dirs
from .checksums import checksums, verify_file_cached
from .download import download_file

_log = logging.getLogger("gsa")

__all__ = [
    "MINI_INFO",
    "ROTMNIST_INFO",
    "ROTMNIST_URL",
    "mini_arrays",
    "load_mini",
    "rotmnist_arrays",
    "load_rotmnist",
    "parse_amat",
]

ROTMNIST_URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
ZIP_NAME = "mnist_rotation_new.zip"
AMAT_TRAIN_VALID = "mnist_all_rotation_normalized_float_train_valid.amat"
AMAT_TEST = "mnist_all_rotation_normalized_float_test.amat"
CACHE_NAME = "mnist_rotation_new.npz"
_CACHE_VERSION = 1
#: Row counts of the real files (tests monkeypatch these for tiny fixtures).
ROWS = {"train_valid": 12000, "test": 50000}
N_VALID = 2000  # last rows of the train_valid file
_SUBDIRS = ("rotmnist", "mnist_rotation_new")

_DIGITS = tuple(str(i) for i in range(10))

MINI_INFO = DatasetInfo(
    name="rotmnist-mini",
    in_channels=1,
    num_classes=10,
    image_size=(28, 28),
    mean=mini_meta.ROTMNIST_MINI_MEAN,
    std=mini_meta.ROTMNIST_MINI_STD,
    class_names=_DIGITS,
    description="Embedded stand-in: 10,000 MNIST test digits randomly rotated, 7k/1k/2k (not the benchmark)",
    # The original code normalised every MNIST variant with MNIST's (upright digits') statistics.
    original_stats=((0.1307,), (0.3081,)),
)

# Same statistics as rotmnist-mini (estimated there: same digits-under-random-rotation distribution).
ROTMNIST_INFO = dataclasses.replace(
    MINI_INFO,
    name="rotmnist",
    description="Rotated MNIST (mnist_rotation_new, Larochelle et al. 2007): 10k train / 2k valid / 50k test",
)


# --------------------------------------------------------------------------- embedded mini


@functools.lru_cache(maxsize=1)
def mini_arrays() -> dict[str, np.ndarray]:
    """The embedded set's arrays (``{split}_x`` uint8 (N, 28, 28), ``_y``, ``_angle``, ``_index``),
    after checking the packaged file's sha256."""
    from importlib import resources

    data = resources.files("gsa.data").joinpath("assets", "rotmnist_mini.npz").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != mini_meta.ROTMNIST_MINI_SHA256:
        raise DataError(
            f"gsa/data/assets/rotmnist_mini.npz: packaged file is corrupt: expected sha256 "
            f"{mini_meta.ROTMNIST_MINI_SHA256}, found {digest} ({len(data):,} bytes); "
            "reinstall gsa or rebuild it with tools/build_rotmnist_mini.py"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_mini(split: str, *, transform=None) -> ArrayDataset:
    """The embedded ``rotmnist-mini`` split as an :class:`ArrayDataset` of (1, 28, 28) images."""
    arrays = mini_arrays()
    return ArrayDataset(
        arrays[f"{split}_x"][:, None], arrays[f"{split}_y"], info=MINI_INFO, split=split, transform=transform
    )


# --------------------------------------------------------------------------- real rotated MNIST


def parse_amat(stream, *, name: str, expected_rows: int | None, total_bytes: int | None = None) -> np.ndarray:
    """Parse a Larochelle ``.amat`` text stream into float32 ``(rows, 785)``.

    Reads ~8 MB of lines at a time and converts them with ``np.fromstring`` (much faster
    than ``np.loadtxt``); ``#`` header lines are skipped.

    Raises:
        DataError: a row without 785 numbers, or a row count other than ``expected_rows``.
    """
    from tqdm.auto import tqdm

    cols = 785
    blocks: list[np.ndarray] = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"parsing {Path(name).name}", leave=False) as bar:
        while True:
            lines = stream.readlines(8 << 20)
            if not lines:
                break
            bar.update(sum(len(line) for line in lines))
            lines = [line for line in lines if line.strip() and not line.lstrip().startswith(b"#")]
            if not lines:
                continue
            with warnings.catch_warnings():  # malformed text: numpy warns and stops early
                warnings.simplefilter("ignore", DeprecationWarning)
                values = np.fromstring(b"".join(lines).decode("ascii", "replace"), dtype=np.float32, sep=" ")
            if values.size != len(lines) * cols:
                raise DataError(
                    f"{name}: malformed .amat file: expected {cols} numbers per row (784 pixels + label), "
                    f"found {values.size} numbers in {len(lines)} rows; delete it and download it again"
                )
            blocks.append(values.reshape(-1, cols))
    data = np.concatenate(blocks) if blocks else np.zeros((0, cols), np.float32)
    if expected_rows is not None and data.shape[0] != expected_rows:
        raise DataError(
            f"{name}: wrong number of rows: expected {expected_rows:,}, found {data.shape[0]:,}; "
            "the file is truncated or not the mnist_rotation_new data, delete it and download it again"
        )
    return data


def _split_amat(data: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 785) float32 -> images (rows, 28, 28) in [0, 1] (row-major, no transpose), labels int64."""
    labels_f = data[:, -1]
    labels = np.rint(labels_f).astype(np.int64)
    if data.shape[0] and (np.abs(labels_f - labels).max() > 1e-4 or labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name}: labels (last column) must be integers 0..9; delete it and download it again")
    images = data[:, :-1].reshape(-1, 28, 28)
    if images.size and (images.min() < -1e-5 or images.max() > 1 + 1e-5):
        raise DataError(
            f"{name}: pixel values must lie in [0, 1], found [{images.min():g}, {images.max():g}]; "
            "delete it and download it again"
        )
    return np.clip(images, 0.0, 1.0), labels


def _compact(images: np.ndarray) -> np.ndarray:
    """uint8 if every value is within 1e-3/255 of a multiple of 1/255 (then lossless to the
    printed precision), else float32."""
    scaled = images.astype(np.float64) * 255.0
    q = np.rint(scaled)
    if images.size == 0 or np.abs(scaled - q).max() < 1e-3:
        return q.astype(np.uint8)
    return images.astype(np.float32)


def _missing_message(dirs: list[Path], data_dir: Path) -> str:
    where = " or ".join(str(d) for d in dirs)
    return (
        f"rotmnist: data not found: expected {ZIP_NAME} (or the extracted {AMAT_TRAIN_VALID} and "
        f"{AMAT_TEST}) in {where}; pass --download (download=True) to fetch it from {ROTMNIST_URL} "
        f"into {data_dir}, or put the file there yourself"
    )


def _read_sources(directory: Path) -> dict[str, np.ndarray] | None:
    """Parse the zip or the two .amat files found in ``directory`` (None if neither)."""
    meta = checksums()["rotated_mnist"]
    zpath = directory / ZIP_NAME
    amats = {"train_valid": directory / AMAT_TRAIN_VALID, "test": directory / AMAT_TEST}
    parsed: dict[str, np.ndarray] = {}
    if zpath.is_file():
        hint = f"delete it and rerun with --download, or download it from {ROTMNIST_URL} into {directory}"
        verify_file_cached(zpath, meta["md5"], meta["sha1"], hint=hint)
        with zipfile.ZipFile(zpath) as zf:
            by_base = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            for key, member in (("train_valid", AMAT_TRAIN_VALID), ("test", AMAT_TEST)):
                if member not in by_base:
                    raise DataError(f"{zpath}: archive has no {member}; {hint}")
                info = zf.getinfo(by_base[member])
                with zf.open(info) as f:
                    parsed[key] = parse_amat(
                        f, name=f"{zpath}:{member}", expected_rows=ROWS[key], total_bytes=info.file_size
                    )
    elif all(p.is_file() for p in amats.values()):
        # No published checksums exist for the extracted files: check shape and ranges instead.
        for key, p in amats.items():
            with open(p, "rb") as f:
                parsed[key] = parse_amat(f, name=str(p), expected_rows=ROWS[key], total_bytes=p.stat().st_size)
    else:
        return None
    tv_x, tv_y = _split_amat(parsed["train_valid"], f"{directory / AMAT_TRAIN_VALID}")
    te_x, te_y = _split_amat(parsed["test"], f"{directory / AMAT_TEST}")
    n_train = tv_x.shape[0] - N_VALID
    return {
        "train_x": _compact(tv_x[:n_train]),
        "train_y": tv_y[:n_train],
        "valid_x": _compact(tv_x[n_train:]),
        "valid_y": tv_y[n_train:],
        "test_x": _compact(te_x),
        "test_y": te_y,
    }


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, version=np.int64(_CACHE_VERSION), **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        _log.warning("rotmnist: could not write the parsed cache %s (%s); parsing again next time", path, exc)
        try:
            tmp.unlink()
        except OSError:
            pass


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "version" not in z.files or int(z["version"]) != _CACHE_VERSION:
                return None
            return {k: z[k] for k in z.files if k != "version"}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def rotmnist_arrays(data_dir=None, download: bool = False) -> dict[str, np.ndarray]:
    """All splits of the real rotated MNIST: ``{split}_x`` (N, 28, 28) uint8 or float32 in
    [0, 1] and ``{split}_y`` int64, from the cache, the zip or the .amat files (searched in
    ``data_dir``, ``data_dir/rotmnist`` and ``data_dir/mnist_rotation_new``)."""
    dirs = candidate_dirs(data_dir, *_SUBDIRS)
    key = tuple(str(d.resolve()) for d in dirs)
    return _rotmnist_arrays_cached(key, download)


@functools.lru_cache(maxsize=2)
def _rotmnist_arrays_cached(key: tuple[str, ...], download: bool) -> dict[str, np.ndarray]:
    dirs = [Path(d) for d in key]
    for d in dirs:
        cached = _read_cache(d / CACHE_NAME)
        if cached is not None:
            return cached
    for d in dirs:
        arrays = _read_sources(d)
        if arrays is not None:
            _write_cache(d / CACHE_NAME, arrays)
            return arrays
    if not download:
        raise DataError(_missing_message(dirs, dirs[0]))
    meta = checksums()["rotated_mnist"]
    download_file(ROTMNIST_URL, dirs[0] / ZIP_NAME, md5=meta["md5"], sha1=meta["sha1"])
    arrays = _read_sources(dirs[0])
    assert arrays is not None
    _write_cache(dirs[0] / CACHE_NAME, arrays)
    return arrays


def load_rotmnist(split: str, *, data_dir=None, download: bool = False, transform=None) -> ArrayDataset:
    """The real rotated-MNIST ``split`` as an :class:`ArrayDataset` of (1, 28, 28) images."""
    arrays = rotmnist_arrays(data_dir, download)
    return ArrayDataset(
        arrays[f"{split}_x"][:, None], arrays[f"{split}_y"], info=ROTMNIST_INFO, split=split, transform=transform
    )
