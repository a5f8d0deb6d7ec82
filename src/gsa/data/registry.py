"""Name -> dataset registry: :func:`list_datasets`, :func:`info`, :func:`get_dataset`, :func:`arrays`."""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from ..registry import Registry
from . import cifar10, custom, pcam, rotmnist
from .base import SPLITS, DatasetInfo

__all__ = ["CUSTOM_FORMS", "list_datasets", "info", "get_dataset", "arrays", "in_memory"]

#: Forms of user datasets accepted besides the built-in names.
CUSTOM_FORMS: tuple[str, ...] = ("folder:PATH", "npz:PATH")

_BUILTIN = {
    "rotmnist-mini": (rotmnist.MINI_INFO, lambda split, d, dl, t: rotmnist.load_mini(split, transform=t)),
    "rotmnist": (
        rotmnist.ROTMNIST_INFO,
        lambda split, d, dl, t: rotmnist.load_rotmnist(split, data_dir=d, download=dl, transform=t),
    ),
    "cifar10": (
        cifar10.CIFAR10_INFO,
        lambda split, d, dl, t: cifar10.load_cifar10(split, data_dir=d, download=dl, transform=t),
    ),
    "pcam": (pcam.PCAM_INFO, lambda split, d, dl, t: pcam.load_pcam(split, data_dir=d, download=dl, transform=t)),
}
# built-in datasets by name; "cifar-10", "rotmnist_mini", ... need no alias (the registry's spelling rule)
_DATASETS = Registry(
    "dataset",
    _BUILTIN,
    aliases={
        "mnist-rot": "rotmnist",
        "rotated-mnist": "rotmnist",
        "mnist-rotation-new": "rotmnist",
        "patchcamelyon": "pcam",
    },
    extra=CUSTOM_FORMS,
)
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def list_datasets() -> list[str]:
    """Built-in dataset names (user data: see :data:`CUSTOM_FORMS`, ``folder:PATH``/``npz:PATH``)."""
    return _DATASETS.names()


def _resolve(name: str) -> tuple[str, str]:
    """``(kind, arg)``: ``("builtin", canonical_name)``, ``("folder", path)`` or ``("npz", path)``."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    for kind in ("folder", "npz"):
        if name.startswith(kind + ":"):
            path = name[len(kind) + 1 :]
            if not path:
                raise ValueError(f"dataset {name!r}: give a path, e.g. {kind}:./my_data")
            return kind, path
    return "builtin", _DATASETS.canonical(name)


def _split(split: str) -> str:
    key = split.strip().lower() if isinstance(split, str) else split
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


def info(name: str) -> DatasetInfo:
    """:class:`DatasetInfo` for ``name``. Built-in names need no data files; ``folder:``
    and ``npz:`` datasets are scanned/loaded to fill it in.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        DataError: a user dataset is malformed.
    """
    kind, arg = _resolve(name)
    if kind == "folder":
        return custom.folder_info(arg)
    if kind == "npz":
        return custom.npz_info(arg)
    return _BUILTIN[arg][0]


def get_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    transform=None,
) -> Dataset:
    """A map-style dataset whose items are ``(image float32 (C, H, W) in [0, 1], label int)``.

    Args:
        name: a name from :func:`list_datasets`, or ``folder:PATH`` / ``npz:PATH``.
        split: ``"train"``, ``"valid"`` (alias ``"val"``) or ``"test"``.
        data_dir: where downloadable datasets live (default ``$GSA_DATA_DIR``, else
            :func:`gsa.userdirs.data_dir`: ``~/.cache/gsa/data`` on Linux); ignored by ``rotmnist-mini`` and the ``PATH`` forms.
        download: fetch missing files from the official URLs (the only time the
            network is used); files are verified against published checksums.
        transform: optional callable applied to each image tensor.

    The returned dataset has ``.labels`` (int64 tensor) and ``.info``.

    Raises:
        ValueError: unknown name or split.
        DataError: files missing (with ``download=False``), truncated or corrupt.
    """
    kind, arg = _resolve(name)
    split = _split(split)
    if kind == "folder":
        return custom.load_folder(arg, split, transform=transform)
    if kind == "npz":
        return custom.load_npz(arg, split, transform=transform)
    return _BUILTIN[arg][1](split, data_dir, download, transform)


def in_memory(name: str) -> bool:
    """Whether :func:`arrays` supports ``name`` (everything except ``pcam``)."""
    kind, arg = _resolve(name)
    return not (kind == "builtin" and arg == "pcam")


def arrays(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split at once: images float32 ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``.

    Fast path for in-memory training without a DataLoader (``rotmnist-mini`` train is
    7,000 x 1 x 28 x 28, 22 MB). Not available for ``pcam`` (read lazily from HDF5).

    Raises:
        ValueError: unknown name/split, or ``pcam``.
    """
    if not in_memory(name):
        raise ValueError(
            f"{name!r} is read lazily from HDF5 (the train split is ~7 GB) and has no in-memory "
            "arrays(); use get_dataset() with a torch DataLoader"
        )
    ds = get_dataset(name, split, data_dir=data_dir, download=download)
    return ds.tensors()  # type: ignore[attr-defined]
