"""The digits the figures show and train on: ``rotmnist-mini`` rotated back to upright."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["upright_digits", "write_upright_npz", "example_digit"]


def upright_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``rotmnist-mini`` digits of ``split`` rotated back to upright by their stored angles.

    Returns images float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` and labels int64 ``(N,)``. The digits
    went through two bilinear rotations (there and back), so they are slightly blurred.
    """
    from ..data.rotmnist import mini_arrays
    from ..groups import rotate_image

    a = mini_arrays()
    x = torch.from_numpy(a[f"{split}_x"]).to(torch.float32)[:, None] / 255.0
    x = rotate_image(x, -torch.rad2deg(torch.from_numpy(a[f"{split}_angle"])))  # stored in radians
    return x.clamp(0.0, 1.0), torch.from_numpy(a[f"{split}_y"]).to(torch.int64)


def write_upright_npz(path: str | os.PathLike) -> Path:
    """Write the upright ``rotmnist-mini`` (:func:`upright_digits`) as an ``npz:`` dataset file.

    Keys ``x_train, y_train, x_valid, y_valid, x_test, y_test`` (uint8 images), so that
    ``gsa train --dataset npz:PATH`` and :func:`gsa.data.get_dataset` read it.
    """
    out = {}
    for split in ("train", "valid", "test"):
        x, y = upright_digits(split)
        out[f"x_{split}"] = (x[:, 0] * 255.0).round().to(torch.uint8).numpy()
        out[f"y_{split}"] = y.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return path


def example_digit(label: int = 7) -> torch.Tensor:
    """The most upright test digit of class ``label``: ``(1, 1, 28, 28)`` in ``[0, 1]``."""
    from ..data.rotmnist import mini_arrays

    a = mini_arrays()
    ang = a["test_angle"]
    dist = np.minimum(ang, 2 * np.pi - ang)
    dist = np.where(a["test_y"] == label, dist, np.inf)
    i = int(np.argmin(dist))
    x = torch.from_numpy(a["test_x"][i]).to(torch.float32)[None, None] / 255.0
    return x
