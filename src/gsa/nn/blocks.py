"""Building blocks of GSA-Nets on lifted maps ``(B, C, |H|, X, Y)`` (paper App. F, Fig. F.1).

Every block here acts point-wise on the group and spatial axes, or crops/pools symmetrically, so
it commutes with the group action (pooling only on even spatial sizes).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import GroupSelfAttention
from .positional import Swish

__all__ = ["LayerNorm", "make_norm", "make_activation", "Crop", "TransformerBlock", "Swish"]

NORMS = ("layer", "batch")
ACTIVATIONS = ("swish", "relu")


class LayerNorm(nn.GroupNorm):
    """Layer norm over ``(C, |H|, X, Y)`` (GroupNorm with one group), with a learned affine per channel.

    The forward pass is exactly ``GroupNorm(1, C)``. In the backward pass, a sample whose input is
    (numerically) constant — variance below ``eps``, e.g. every feature of a blank image while the
    biases are still zero — passes no gradient to its input (its weight and bias still get theirs).
    There the exact derivative is ``1/sqrt(eps) = 316`` times the incoming one, it carries no
    information (the normalised values are round-off), and a stack of such norms overflows float32
    (21 in the ``rotmnist`` network: ``316**21``), turning a whole batch's gradient into NaN.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` → same shape, normalised over everything but the batch axis."""
        if x.requires_grad and torch.is_grad_enabled() and x.shape[0] and x[0].numel() > 1:
            var = x.detach().flatten(1).var(dim=1, unbiased=False)
            keep = (var >= self.eps).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            x = _MaskGradient.apply(x, keep)
        return super().forward(x)


class _MaskGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``keep`` (broadcast)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(keep)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def make_norm(kind: str, channels: int) -> nn.Module:
    """``"layer"`` → :class:`LayerNorm`, ``"batch"`` → ``BatchNorm3d``."""
    k = kind.lower().replace("_", "").removesuffix("norm")
    if k == "layer":
        return LayerNorm(channels)
    if k == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


def make_activation(kind: str) -> nn.Module:
    """``"swish"`` (SiLU) or ``"relu"``."""
    k = kind.lower()
    if k in ("swish", "silu"):
        return Swish()
    if k == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}; expected one of {', '.join(ACTIVATIONS)}")


class Crop(nn.Module):
    """Remove ``size`` pixels on each side of both spatial axes: ``(..., X, Y) → (..., X-2s, Y-2s)``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        if not s:
            return x
        if x.shape[-1] <= 2 * s or x.shape[-2] <= 2 * s:
            raise ValueError(f"cannot crop {s} pixels per side from a {tuple(x.shape[-2:])} map")
        return x[..., s:-s, s:-s]

    def extra_repr(self) -> str:
        return str(self.size)


def _pointwise(cin: int, cout: int, bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=1, bias=bias)


class TransformerBlock(nn.Module):
    """Pre-activation attention block followed by a point-wise MLP, both residual.

    ``(B, C_in, |H|, X, Y) → (B, C_out, |H|, X - 2·crop, Y - 2·crop)``::

        a = Crop(Dropout(Act(Norm(GSA(Act(Norm(x))))))) + Crop(shortcut(x))
        out = Norm(W2 · Act(Norm(W1 · a))) + a
    """

    def __init__(
        self,
        group,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 9,
        mid_channels: int | None = None,
        patch_size: int | None = 5,
        crop: int = 0,
        attention_dropout: float = 0.0,
        value_dropout: float = 0.0,
        norm: str = "layer",
        activation: str = "swish",
        backend: str = "auto",
        coordinate_init: str = "spread",
        positional: str = "rowcol",
    ):
        super().__init__()
        self.attention = GroupSelfAttention(
            group,
            in_channels,
            out_channels,
            num_heads=num_heads,
            mid_channels=mid_channels,
            patch_size=patch_size,
            attention_dropout=attention_dropout,
            backend=backend,
            coordinate_init=coordinate_init,
            positional=positional,
        )
        self.pre = nn.Sequential(make_norm(norm, in_channels), make_activation(activation))
        self.post = nn.Sequential(make_norm(norm, out_channels), make_activation(activation), nn.Dropout(value_dropout))
        self.shortcut = _pointwise(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        self.crop = Crop(crop)
        hidden = out_channels // 2
        self.mlp = nn.Sequential(
            _pointwise(out_channels, hidden),
            make_norm(norm, hidden),
            make_activation(activation),
            _pointwise(hidden, out_channels),
            make_norm(norm, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.crop(self.post(self.attention(self.pre(x)))) + self.crop(self.shortcut(x))
        return self.mlp(a) + a
