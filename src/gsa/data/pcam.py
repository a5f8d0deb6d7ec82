"""PatchCamelyon (PCam, Veeling et al. 2018) from the six official HDF5 files of Zenodo
record 2546921: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (``x``: uint8
``[N, 96, 96, 3]``; ``y``: uint8 ``[N, 1, 1, 1]``), or their ``.h5.gz`` downloads, which
are verified and decompressed once next to themselves (the ``.gz`` is kept; delete it
yourself to save space).

Images are read lazily, one patch at a time: the training file is ~7 GB and is never
loaded whole. Each process (e.g. each DataLoader worker) opens its own h5 handle on first
access, so the dataset is safe to use with ``num_workers > 0``.

Checksums: the pcam README lists md5 values for the valid and test ``.gz`` files that
users (and torchvision) report swapped; both mappings are in ``checksums.json``. A
``valid``/``test`` file is accepted if its md5 is the one recorded for its name under
either mapping (the set of six values is undisputed, so a corrupt file is still caught).
The same rule is applied to the decompressed ``.h5`` md5 values. A verified file is
remembered in a signed ``.gsa-verified.json`` stamp (see :mod:`gsa.data.checksums`) so the
7 GB file is hashed only once.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..extras import require
from .base import DatasetInfo, candidate_dirs
from .checksums import _valid_stamp, checksums, mark_verified, verify_file_cached
from .download import download_file

__all__ = ["PCAM_INFO", "PCAM_URL", "PCamDataset", "pcam_files", "load_pcam"]

PCAM_URL = "https://zenodo.org/record/2546921/files/{name}?download=1"
_SUBDIRS = ("pcam", "PCam")

PCAM_INFO = DatasetInfo(
    name="pcam",
    in_channels=3,
    num_classes=2,
    image_size=(96, 96),
    # Approximate (third-party figures: mean over all training pixels; std averaged over
    # per-image stds, which slightly underestimates the pixel std). Not re-measured here.
    mean=(0.7008, 0.5384, 0.6916),
    std=(0.1818, 0.2008, 0.1648),
    class_names=("normal", "metastatic"),
    description="PatchCamelyon histopathology patches 96x96: 262,144 train / 32,768 valid / 32,768 test",
    original_stats=((0.701, 0.538, 0.692), (0.235, 0.277, 0.213)),  # the original code's fixed values
)


def file_name(split: str, kind: str) -> str:
    """``camelyonpatch_level_2_split_{split}_{kind}.h5`` for kind ``x`` or ``y``."""
    return f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def _swap(name: str) -> str:
    if "_valid_" in name:
        return name.replace("_valid_", "_test_")
    if "_test_" in name:
        return name.replace("_test_", "_valid_")
    return name


def accepted_md5(name: str) -> tuple[str, ...]:
    """md5 values accepted for ``name`` (an ``.h5.gz`` or ``.h5`` file name): the value for
    this name in each recorded mapping, plus for valid/test the value of the swapped name."""
    meta = checksums()["pcam"]
    if name.endswith(".gz"):
        tables = [meta["gz_md5_per_readme"], meta["gz_md5_as_measured_by_users"]]
    else:
        tables = [meta["h5_md5_uncompressed_per_eva"]]
    values = []
    for table in tables:
        for n in (name, _swap(name)):
            if n in table and table[n] not in values:
                values.append(table[n])
    return tuple(values)


def _decompress(gz_path: Path, h5_path: Path) -> None:
    """Stream-decompress ``gz_path`` to ``h5_path`` (temp file + atomic rename) with a progress
    bar, checking the output's md5 on the fly against the published ``.h5`` values."""
    from tqdm.auto import tqdm

    tmp = h5_path.with_name(f".{h5_path.name}.{os.getpid()}.part")
    md5 = hashlib.md5()
    try:
        with (
            gzip.open(gz_path, "rb") as src,
            open(tmp, "wb") as dst,
            tqdm(total=gz_path.stat().st_size, unit="B", unit_scale=True, desc=f"decompressing {gz_path.name}") as bar,
        ):
            raw = src.fileobj  # the underlying compressed file, for progress
            last = 0
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                dst.write(chunk)
                md5.update(chunk)
                pos = raw.tell() if raw is not None else last
                bar.update(pos - last)
                last = pos
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        _unlink(tmp)
        raise DataError(f"{gz_path}: could not decompress ({exc}); delete it and download it again") from exc
    os.replace(tmp, h5_path)
    accepted = accepted_md5(h5_path.name)
    if accepted and md5.hexdigest() not in accepted:
        # The .gz matched its published md5 and gzip checked its CRC, so the output is
        # genuine; a mismatch means the recorded .h5 value is wrong, not the data.
        warnings.warn(
            f"{h5_path}: md5 {md5.hexdigest()} differs from the recorded {' or '.join(accepted)}, "
            f"but it was decompressed from a verified {gz_path.name}; accepting it",
            stacklevel=2,
        )
        accepted = (md5.hexdigest(),)
    mark_verified(h5_path, accepted or None)


def _h5_md5(h5_path: Path) -> tuple[str, ...]:
    """Accepted md5 of an .h5 file: the published values, or the one recorded (in a genuine,
    signed stamp) when this very file was decompressed here from a verified .gz."""
    stamp = _valid_stamp(h5_path)
    if stamp and stamp.get("md5"):
        return tuple(stamp["md5"])
    return accepted_md5(h5_path.name)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _ensure_file(dirs: list[Path], name: str, download: bool) -> Path | None:
    """Path of a verified ``name`` (.h5), decompressing/downloading its .gz as needed."""
    gz_name = name + ".gz"
    url = PCAM_URL.format(name=gz_name)
    for d in dirs:
        hint = f"delete it and rerun with --download, or download it from {url} into {d}"
        h5, gz = d / name, d / gz_name
        if h5.is_file():
            verify_file_cached(h5, _h5_md5(h5), hint=hint)
            return h5
        if gz.is_file():
            verify_file_cached(gz, accepted_md5(gz_name), hint=hint)
            _decompress(gz, h5)
            return h5
    if not download:
        return None
    gz = dirs[0] / gz_name
    download_file(url, gz, md5=accepted_md5(gz_name))
    _decompress(gz, dirs[0] / name)
    return dirs[0] / name


def pcam_files(split: str, *, data_dir=None, download: bool = False) -> tuple[Path, Path]:
    """Verified ``(x_path, y_path)`` for ``split``, searched in ``data_dir``, ``data_dir/pcam``,
    ``data_dir/PCam``.

    Raises:
        DataError: files missing (and ``download=False``) or corrupt.
    """
    dirs = candidate_dirs(data_dir, *_SUBDIRS)
    paths = []
    for kind in ("x", "y"):
        p = _ensure_file(dirs, file_name(split, kind), download)
        if p is None:
            where = " or ".join(str(d) for d in dirs)
            raise DataError(
                f"pcam: data not found: expected {file_name(split, 'x')} and {file_name(split, 'y')} "
                f"(or their .h5.gz downloads) in {where}; pass --download (download=True) to fetch them from "
                f"{PCAM_URL.format(name='<name>.h5.gz')} into {dirs[0]}, or put the files there yourself"
            )
        paths.append(p)
    return paths[0], paths[1]


class PCamDataset(Dataset):
    """Lazily-read PCam split: items are (float32 ``(3, 96, 96)`` in [0, 1], int label 0/1).

    The labels (a few hundred KB) are read at construction and kept as ``self.labels``
    (int64 tensor ``(N,)``); images are read from ``x_path`` per item through an h5
    handle opened lazily in each process.
    """

    def __init__(self, x_path, y_path, *, split: str | None = None, info: DatasetInfo = PCAM_INFO, transform=None):
        h5py = require("h5py", "the PCam dataset")

        self.x_path, self.y_path = Path(x_path), Path(y_path)
        self.split, self.info, self.transform = split, info, transform
        try:
            with h5py.File(self.y_path, "r") as fy:
                y = fy["y"]
                if y.ndim != 4 or y.shape[1:] != (1, 1, 1):
                    raise DataError(f"{self.y_path}: dataset 'y' must have shape [N, 1, 1, 1], found {y.shape}")
                labels = np.asarray(y[:, 0, 0, 0]).astype(np.int64)
            with h5py.File(self.x_path, "r") as fx:
                x = fx["x"]
                if x.ndim != 4 or x.shape[1:] != (96, 96, 3) or x.dtype != np.uint8:
                    raise DataError(
                        f"{self.x_path}: dataset 'x' must be uint8 [N, 96, 96, 3], found {x.dtype} {x.shape}"
                    )
                n = x.shape[0]
        except (OSError, KeyError) as exc:
            raise DataError(
                f"{self.x_path.parent}: unreadable PCam h5 file ({exc}); delete it and download it again"
            ) from exc
        if n != labels.shape[0]:
            raise DataError(f"{self.x_path}: {n} images but {labels.shape[0]} labels in {self.y_path.name}")
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise DataError(f"{self.y_path}: labels must be 0 or 1")
        self.labels = torch.from_numpy(labels)
        self._file = None
        self._pid = None

    def _x(self):
        if self._file is None or self._pid != os.getpid():
            self._file = require("h5py", "the PCam dataset").File(self.x_path, "r")
            self._pid = os.getpid()
        return self._file["x"]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        patch = torch.from_numpy(np.asarray(self._x()[index]))  # (96, 96, 3) uint8
        x = patch.permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None  # h5 handles do not pickle; reopen in the worker
        return state

    def close(self) -> None:
        """Close this process's HDF5 handle (it is reopened on the next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f"PCamDataset(split={self.split!r}, n={len(self)}, x={self.x_path.name})"


def load_pcam(split: str, *, data_dir=None, download: bool = False, transform=None) -> PCamDataset:
    """PCam ``split`` as a lazily-read :class:`PCamDataset`."""
    x_path, y_path = pcam_files(split, data_dir=data_dir, download=download)
    return PCamDataset(x_path, y_path, split=split, transform=transform)
