"""Convolutional baselines for the learning benchmark: a plain CNN and a group CNN (G-CNN).

One class serves both: :class:`GroupCNN` with ``group="z2"`` is an ordinary CNN; with ``"p4"``
(or any group of :mod:`gsa.groups`) it is the group-convolutional network of Cohen & Welling
(2016), built on the same group actions as the GSA layers:

* lifting convolution: the filter bank is acted on by every group element,
  ``ψ_h = L_h ψ`` (:func:`gsa.groups.act_on_image`), giving ``(B, C, |H|, X, Y)``;
* group convolution: filters on the group, ``ψ_h = L_h ψ`` with ``L_h`` acting on lifted maps
  (:func:`gsa.groups.act_on_lifted`: rotate the spatial axes, permute the group axis);
* batch norm per channel (shared over the group axis), ReLU, 2×2 max-pool on even sizes;
* read-out: mean over space, max over the group axis, a linear classifier: invariant logits.

Benchmark-only code: the library's models are GSA-Nets; these are the baselines a user would
pick instead, compared at about the same parameter count.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import gsa

__all__ = ["GroupCNN", "LiftingConv", "GroupConv"]


class LiftingConv(nn.Module):
    """``(B, C_in, X, Y) → (B, C_out, |H|, X, Y)``: a ``k×k`` convolution with every ``L_h ψ``."""

    def __init__(self, group, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.group = gsa.groups.get(group)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, w = self.group, self.weight
        bank = torch.stack([gsa.groups.act_on_image(g, h, w) for h in range(g.order)], dim=1)
        out = F.conv2d(x, bank.flatten(0, 1), padding=w.shape[-1] // 2)
        return out.unflatten(1, (w.shape[0], g.order))


class GroupConv(nn.Module):
    """``(B, C_in, |H|, X, Y) → (B, C_out, |H|, X, Y)``: a ``k×k`` group convolution."""

    def __init__(self, group, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.group = gsa.groups.get(group)
        H = self.group.order
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, H, kernel_size, kernel_size))
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (in_channels * H * kernel_size**2)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        g, w = self.group, self.weight
        bank = torch.stack([gsa.groups.act_on_lifted(g, h, w) for h in range(g.order)], dim=1)
        out = F.conv2d(f.flatten(1, 2), bank.flatten(0, 1).flatten(1, 2), padding=w.shape[-1] // 2)
        return out.unflatten(1, (w.shape[0], g.order))


class GroupCNN(nn.Module):
    """A small (G-)CNN for 28×28 digits: ``(B, C_in, X, Y) → (B, num_classes)``.

    ``lift → [gconv] → pool → [gconv, gconv] → pool → [gconv] → read-out``, each convolution
    followed by batch norm and ReLU; 3×3 filters with zero padding (exact under quarter turns
    and mirrors on square images). Invariant to the group's exact transformations when the
    spatial sizes before each pool are even (28 → 14 → 7).
    """

    def __init__(self, group: str = "p4", in_channels: int = 1, num_classes: int = 10, channels: int = 8):
        super().__init__()
        self.group = gsa.groups.get(group)
        c = channels
        convs = [LiftingConv(self.group, in_channels, c)] + [GroupConv(self.group, c, c) for _ in range(4)]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.BatchNorm3d(c) for _ in convs)
        self.pool_after = {1, 3}
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            f = F.relu(norm(conv(f)))
            if i in self.pool_after:
                f = F.max_pool3d(f, kernel_size=(1, 2, 2))
        return self.classifier(f.mean(dim=(-2, -1)).amax(dim=-1))

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
