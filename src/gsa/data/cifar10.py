"""CIFAR-10 from the official python version (``cifar-10-python.tar.gz`` or its extracted
``cifar-10-batches-py/`` folder).

Splits: ``train`` = the first 45,000 images of ``data_batch_1 .. data_batch_5`` (in file
order), ``valid`` = the last 5,000 of them (one tenth; fixed, not random), ``test`` =
``test_batch`` (10,000). The original GSA-Nets code had no validation split and chose
its best epoch on the test set; here model selection uses ``valid`` and ``test`` is only
for the final number.

The batches are Python pickles. They are read with a restricted unpickler that only
accepts numpy arrays, and only after the file's md5 matched the published value.
Reading straight from the tarball (no extraction) takes a couple of seconds.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArrayDataset, DatasetInfo, candidate_dirs
from .checksums import checksums, verify_file_cached
from .download import download_file

__all__ = ["CIFAR10_INFO", "CIFAR10_URL", "cifar10_arrays", "load_cifar10"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TAR_NAME = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
_SUBDIRS = ("cifar10", "cifar-10")

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    in_channels=3,
    num_classes=10,
    image_size=(32, 32),
    # Pixel-level statistics of the 50,000 official training images.
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    class_names=CLASS_NAMES,
    description="CIFAR-10 (Krizhevsky 2009): 45k train / 5k valid (last of the training batches) / 10k test",
    # The original code's fixed values: the usual mean, a std smaller than the pixel std above.
    original_stats=((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
)

_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") is not None else "numpy.core"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the few globals a pickled numpy array needs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            module = _NUMPY_CORE + module.split("core", 1)[1]
        return getattr(importlib.import_module(module), name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 (any failure means a bad file)
        raise DataError(f"{name}: not a CIFAR-10 python batch ({exc}); delete it and download it again") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR-10 python batch (a {type(obj).__name__}, not a dict)")
    return obj


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch dict (bytes keys, ``b'data'`` uint8 [N, 3072], ``b'labels'``) -> (N, 3, 32, 32), (N,)."""
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{name}: CIFAR-10 batch lacks b'data' or b'labels'; delete it and download it again")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(
            f"{name}: expected b'data' uint8 [N, 3072] and N labels, found {data.dtype} {data.shape} "
            f"and {labels.shape[0]} labels; delete it and download it again"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name}: labels must be 0..9; delete it and download it again")
    # Each row: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    return data.reshape(-1, 3, 32, 32), labels


def _read_batches(directory: Path) -> dict[str, bytes] | None:
    """Raw bytes of the 7 members, from the tarball or the extracted folder (None if neither)."""
    meta = checksums()["cifar10"]
    names = (*TRAIN_BATCHES, TEST_BATCH, META)
    folder = directory / FOLDER
    tar_path = directory / TAR_NAME
    hint = f"delete it and rerun with --download, or download it from {CIFAR10_URL} into {directory}"
    if folder.is_dir() and all((folder / n).is_file() for n in names):
        out = {}
        for n in names:
            m = meta["members"][f"{FOLDER}/{n}"]
            verify_file_cached(folder / n, m["md5"], expected_size=m.get("bytes"), hint=hint)
            out[n] = (folder / n).read_bytes()
        return out
    if tar_path.is_file():
        verify_file_cached(tar_path, meta["archive"]["md5"], expected_size=meta["archive"]["bytes"], hint=hint)
        out = {}
        with tarfile.open(tar_path, "r:gz") as tf:
            for member in tf:
                if member.isfile() and Path(member.name).name in names and Path(member.name).parent.name == FOLDER:
                    f = tf.extractfile(member)
                    assert f is not None
                    out[Path(member.name).name] = f.read()
        missing = [n for n in names if n not in out]
        if missing:
            raise DataError(f"{tar_path}: archive lacks {FOLDER}/{missing[0]}; {hint}")
        return out
    return None


def cifar10_arrays(data_dir=None, download: bool = False) -> dict[str, np.ndarray]:
    """All CIFAR-10 splits: ``{split}_x`` uint8 (N, 3, 32, 32), ``{split}_y`` int64 (N,),
    plus ``class_names``. Searched in ``data_dir``, ``data_dir/cifar10``, ``data_dir/cifar-10``."""
    dirs = candidate_dirs(data_dir, *_SUBDIRS)
    return _cifar10_cached(tuple(str(d.resolve()) for d in dirs), download)


@functools.lru_cache(maxsize=1)
def _cifar10_cached(key: tuple[str, ...], download: bool) -> dict[str, np.ndarray]:
    dirs = [Path(d) for d in key]
    raw = None
    for d in dirs:
        raw = _read_batches(d)
        if raw is not None:
            break
    if raw is None:
        if not download:
            where = " or ".join(str(d) for d in dirs)
            raise DataError(
                f"cifar10: data not found: expected {TAR_NAME} (or the extracted {FOLDER}/) in {where}; "
                f"pass --download (download=True) to fetch it from {CIFAR10_URL} into {dirs[0]}, "
                "or put the file there yourself"
            )
        meta = checksums()["cifar10"]["archive"]
        download_file(CIFAR10_URL, dirs[0] / TAR_NAME, md5=meta["md5"], size=meta["bytes"])
        raw = _read_batches(dirs[0])
        assert raw is not None
    xs, ys = [], []
    for n in TRAIN_BATCHES:
        x, y = _batch_arrays(_unpickle(raw[n], n), n)
        xs.append(x)
        ys.append(y)
    train_x, train_y = np.concatenate(xs), np.concatenate(ys)
    test_x, test_y = _batch_arrays(_unpickle(raw[TEST_BATCH], TEST_BATCH), TEST_BATCH)
    meta_obj = _unpickle(raw[META], META)
    names = meta_obj.get(b"label_names", meta_obj.get("label_names"))
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names) if names else CLASS_NAMES
    n_valid = train_x.shape[0] // 10
    n_train = train_x.shape[0] - n_valid
    return {
        "train_x": train_x[:n_train],
        "train_y": train_y[:n_train],
        "valid_x": train_x[n_train:],
        "valid_y": train_y[n_train:],
        "test_x": test_x,
        "test_y": test_y,
        "class_names": np.array(class_names),
    }


def load_cifar10(split: str, *, data_dir=None, download: bool = False, transform=None) -> ArrayDataset:
    """CIFAR-10 ``split`` as an :class:`ArrayDataset` of (3, 32, 32) images."""
    arrays = cifar10_arrays(data_dir, download)
    return ArrayDataset(arrays[f"{split}_x"], arrays[f"{split}_y"], info=CIFAR10_INFO, split=split, transform=transform)
