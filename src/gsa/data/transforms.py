"""Image rotation used by the rotated-MNIST stand-in, robustness plots and equivariance tests.

Convention: a positive angle rotates the picture **counter-clockwise as displayed with
row 0 at the top** (``plt.imshow`` default), about the image centre, pixel
``((H - 1) / 2, (W - 1) / 2)``. ``rotate(x, pi / 2)`` is therefore exactly
``torch.rot90(x, 1, dims=(-2, -1))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["rotate", "QUARTER_TURN_ATOL"]

#: Angles within this many radians of a multiple of pi/2 are treated as exact quarter turns.
QUARTER_TURN_ATOL = 1e-6

_MODES = ("bilinear", "nearest", "bicubic")


def _angles_tensor(angles, batch: int) -> torch.Tensor:
    a = torch.as_tensor(angles, dtype=torch.float64).detach().to("cpu").reshape(-1)
    if a.numel() == 1:
        a = a.expand(batch)
    if a.numel() != batch:
        raise ValueError(f"rotate: got {a.numel()} angles for a batch of {batch} images")
    if not torch.isfinite(a).all():
        raise ValueError("rotate: angles must be finite")
    return a


def _rotate_grid(x: torch.Tensor, angles: torch.Tensor, mode: str) -> torch.Tensor:
    """Rotate ``x`` (n, C, H, W) by ``angles`` (n,) float64 radians with ``grid_sample``."""
    n, c, h, w = x.shape
    cos, sin = torch.cos(angles), torch.sin(angles)
    # Output pixel (x, y) in normalised coords (y pointing down) samples the input at
    # R(-angle) applied in pixel units: x_in = x cos - y (H/W) sin, y_in = x (W/H) sin + y cos.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    theta = theta.to(device=x.device, dtype=work_dtype)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(x.to(work_dtype), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def rotate(
    images: torch.Tensor,
    angles: float | Sequence[float] | torch.Tensor,
    *,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Rotate images about their centre by per-image angles (radians, counter-clockwise
    as displayed with row 0 at the top).

    Args:
        images: float tensor ``(B, C, H, W)`` or ``(C, H, W)``.
        angles: one angle for all images, or ``B`` angles (sequence or tensor ``(B,)``).
        mode: ``"bilinear"`` (default), ``"nearest"`` or ``"bicubic"`` interpolation.

    Returns:
        Tensor of the same shape, dtype and device. Pixels that come from outside the
        image are 0 (``grid_sample`` with ``align_corners=False``, zero padding).

    Angles within ``QUARTER_TURN_ATOL`` of a multiple of pi/2 are done with
    ``torch.rot90`` and are bit-identical to it when ``H == W`` (0 and pi: any shape),
    so 90-degree equivariance tests see no interpolation error. Other angles are
    interpolated; the image corners are lost and the content is slightly blurred.
    """
    if mode not in _MODES:
        raise ValueError(f"rotate: mode must be one of {_MODES}, got {mode!r}")
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("rotate: images must be a floating-point tensor (B, C, H, W) or (C, H, W)")
    squeeze = images.dim() == 3
    if squeeze:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"rotate: expected (B, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    a = _angles_tensor(angles, b)

    quarter = a / (math.pi / 2)
    k = torch.round(quarter)
    exact = (quarter - k).abs() * (math.pi / 2) <= QUARTER_TURN_ATOL
    k = k.to(torch.int64) % 4
    if h != w:
        exact &= k % 2 == 0  # a quarter turn would change the shape

    if bool(exact.all()) and bool((k == k[0]).all()):
        out = torch.rot90(images, int(k[0]), dims=(-2, -1)).contiguous()
    else:
        out = torch.empty_like(images)
        for q in range(4):
            idx = torch.nonzero(exact & (k == q)).flatten()
            if idx.numel():
                dev_idx = idx.to(images.device)
                out[dev_idx] = torch.rot90(images[dev_idx], q, dims=(-2, -1))
        idx = torch.nonzero(~exact).flatten()
        if idx.numel():
            dev_idx = idx.to(images.device)
            out[dev_idx] = _rotate_grid(images[dev_idx], a[idx], mode)
    return out.squeeze(0) if squeeze else out
