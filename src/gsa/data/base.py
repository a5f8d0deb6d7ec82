"""Shared building blocks: :class:`DatasetInfo`, the in-memory :class:`ArrayDataset`,
pixel scaling, seeded splits and channel statistics."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import userdirs
from ..errors import DataError

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "ArrayDataset",
    "to_float01",
    "seeded_split",
    "channel_stats",
    "check_labels",
    "check_stats",
    "default_data_dir",
    "candidate_dirs",
]

#: The splits every dataset offers. Model selection uses ``valid``; ``test`` is for the final number.
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registry name, e.g. ``"rotmnist-mini"`` or ``"npz:/path/file.npz"``.
        in_channels: C of the ``(C, H, W)`` images.
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        image_size: ``(H, W)``.
        mean, std: per-channel pixel mean/std of the training images in ``[0, 1]``
            (for input normalisation; see each dataset's docs for how they were obtained).
        class_names: one name per label.
        splits: available split names.
        description: one line.
        original_stats: ``(mean, std)`` the original GSA-Nets code normalised this dataset with
            (fixed values from its ``dataset.py``), or ``None`` when it had none; a run uses them
            with ``gsa train --input-stats original``.
    """

    name: str
    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    splits: tuple[str, ...] = SPLITS
    description: str = ""
    original_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def to_float01(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``0..255`` -> float32 ``x / 255`` (255 maps to exactly 1.0); float -> float32 as is."""
    t = torch.as_tensor(images)
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)
    return t.to(torch.float32)


class ArrayDataset(Dataset):
    """An in-memory dataset of images ``(N, C, H, W)`` and integer labels ``(N,)``.

    Images are stored compactly (uint8 ``0..255``, or float32 already in ``[0, 1]``) and
    returned one at a time as float32 ``(C, H, W)`` in ``[0, 1]`` with an ``int`` label.

    Attributes:
        images: stored image tensor ``(N, C, H, W)`` (uint8 or float32).
        labels: int64 tensor ``(N,)``.
        info: the dataset's :class:`DatasetInfo` (may be ``None``).
        split: split name (may be ``None``).
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        info: DatasetInfo | None = None,
        split: str | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels).to(torch.int64)
        if images.dim() != 4:
            raise ValueError(f"ArrayDataset: images must be (N, C, H, W), got {tuple(images.shape)}")
        if images.dtype not in (torch.uint8, torch.float32):
            images = images.to(torch.float32)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"ArrayDataset: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.info = info
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_float01(self.images[index])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float32 ``(N, C, H, W)`` in ``[0, 1]`` and labels int64 ``(N,)``
        (no transform applied)."""
        return to_float01(self.images), self.labels.clone()

    def __repr__(self) -> str:
        name = self.info.name if self.info is not None else "?"
        return f"ArrayDataset({name!r}, split={self.split!r}, n={len(self)}, shape={tuple(self.images.shape[1:])})"


def seeded_split(n: int, seed: int = 0, *, what: str = "dataset") -> dict[str, np.ndarray]:
    """Split ``range(n)`` into train/valid/test = 80/10/10 % with a fixed seed.

    valid and test each get ``round(n / 10)`` items (half rounds up, at least 1), train
    the rest. Indices within each split are sorted. Needs ``n >= 3``.
    """
    if n < 3:
        raise DataError(f"{what}: only {n} images; an automatic 80/10/10 split needs at least 3")
    n_eval = max(1, int(np.floor(n / 10 + 0.5)))
    perm = np.random.default_rng(seed).permutation(n)
    return {
        "train": np.sort(perm[2 * n_eval :]),
        "valid": np.sort(perm[:n_eval]),
        "test": np.sort(perm[n_eval : 2 * n_eval]),
    }


def channel_stats(images: torch.Tensor | np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel pixel mean and std (population) of ``images (N, C, H, W)``, scaled to
    ``[0, 1]`` like the datasets return them; accumulated in float64, chunk by chunk."""
    t = torch.as_tensor(images)
    c = t.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, t.shape[0], chunk):
        x = to_float01(t[start : start + chunk]).to(torch.float64)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        return tuple([0.0] * c), tuple([1.0] * c)
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _missing_runs(present: np.ndarray, num_classes: int) -> list[tuple[int, int]]:
    """Inclusive ranges of ``0 .. num_classes - 1`` absent from the sorted unique ``present`` (no
    array of ``num_classes`` entries is made: a label of 10**12 costs nothing)."""
    bounds = [-1, *(int(v) for v in present), num_classes]
    return [(a + 1, b - 1) for a, b in zip(bounds, bounds[1:]) if b - a > 1]


def check_labels(
    what: str, labels: Mapping[str, np.ndarray], num_classes: int, class_names: Sequence[str] | None = None
) -> None:
    """Refuse labels that would silently train the wrong model, with a one-line :class:`DataError`.

    ``labels`` maps each split to its integer labels. Every split must hold at least one image, every
    class ``0 .. num_classes - 1`` at least one image (a label of 999999 among 0..9 would otherwise
    build a 1,000,000-class model), and the train split at least two classes. ``class_names`` (one
    per class), when given, are named in the messages.
    """
    for split, y in labels.items():
        if len(y) == 0:
            raise DataError(f"{what}: the {split} split has no images; every split ({', '.join(labels)}) needs some")
    k = num_classes
    present = np.unique(np.concatenate([np.asarray(y, dtype=np.int64).reshape(-1) for y in labels.values()]))
    if present[0] < 0 or present[-1] >= k:
        bad = int(present[0] if present[0] < 0 else present[-1])
        raise DataError(f"{what}: label {bad} is outside the {k} classes 0..{k - 1}")
    gaps = _missing_runs(present, k)
    if gaps:
        text = ", ".join(f"{a}..{b}" if a < b else str(a) for a, b in gaps[:4]) + (", ..." if len(gaps) > 4 else "")
        if class_names is not None and sum(b - a + 1 for a, b in gaps) <= 5:
            text += " (" + ", ".join(repr(class_names[i]) for a, b in gaps for i in range(a, b + 1)) + ")"
        raise DataError(
            f"{what}: {len(present)} distinct labels but {k} classes 0..{k - 1} (largest label {int(present[-1])}): "
            f"no image is labelled {text}; number the classes 0..{len(present) - 1} without gaps"
        )
    train = np.unique(np.asarray(labels["train"]))
    if len(train) < 2:
        c = int(train[0])
        name = f" ({class_names[c]!r})" if class_names is not None else ""
        raise DataError(f"{what}: every training image has label {c}{name}; a classifier needs at least 2 classes")


def check_stats(what: str, std: Sequence[float]) -> None:
    """Refuse training images that are all one value (pixel std 0 in every channel): normalising them
    divides by zero and there is nothing to learn. One constant channel (an opaque alpha channel) is
    fine: :func:`gsa.train.steps.make_prepare` only centres such a channel."""
    if len(std) and all(not (s > 0) for s in std):
        raise DataError(
            f"{what}: every pixel of every training image has the same value (std 0 in every channel); "
            "there is nothing to learn - check that the images were not blanked when they were saved"
        )


def default_data_dir() -> Path:
    """``$GSA_DATA_DIR`` if set, else ``data`` in the platform's cache folder for gsa
    (``~/.cache/gsa/data`` on Linux; :func:`gsa.userdirs.data_dir`)."""
    return userdirs.data_dir()


def candidate_dirs(data_dir: str | os.PathLike | None, *subdirs: str) -> list[Path]:
    """Folders searched for a dataset's files: ``data_dir`` itself, then ``data_dir/<sub>``
    for each name in ``subdirs`` (e.g. ``data/cifar10/``)."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return [root] + [root / s for s in subdirs]
