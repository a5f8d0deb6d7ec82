"""GSA-Net: lifting self-attention, transformer blocks, pooling, invariant read-out (paper App. F)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import groups as _groups
from ..nn.attention import GroupSelfAttention, LiftingSelfAttention
from ..nn.blocks import Crop, TransformerBlock, make_activation, make_norm
from ..nn.positional import COORDINATE_INITS, ENCODINGS, CoordinateMLP

__all__ = ["GSANetConfig", "GSANet", "ORIGINAL_STYLE", "READOUTS", "HEAD_INITS", "default_pretrained_cfg"]

READOUTS = ("mean", "sum")
HEAD_INITS = ("zero", "whitening")

#: The original code's choices for the fields that set how a network starts learning
#: (``GSANetConfig(**ORIGINAL_STYLE)`` or ``gsa.models.create(..., **ORIGINAL_STYLE)``).
ORIGINAL_STYLE: dict = {"readout": "sum", "coordinate_init": "zero", "head_init": "whitening"}


def _per_item(value, count: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries, expected {count} (or one int for all)")
    return value


@dataclass
class GSANetConfig:
    """Everything that defines a GSA-Net. Presets (:func:`gsa.models.create`) are instances of this.

    ``patch_size=None`` means global attention. ``crop`` has one entry per attention layer,
    ``expansion`` one per block (channel multiplier applied at the block's first layer).
    ``lifting_heads`` sets the lifting layer's heads (default: ``num_heads``). With one input
    channel every head of the lifting layer carries one scalar feature, and the lifting layer
    costs about ``1/|H|²`` of a group layer per head, so more heads there are cheap.

    Three fields decide how the network starts learning; :data:`ORIGINAL_STYLE` holds the values
    of the paper's code, the defaults are the ones measured to learn faster
    (``python -m benchmarks.learning``; see ``docs/learning.md``):

    * ``readout``: ``"mean"`` or ``"sum"`` (original) of the class maps over space, before the
      max over the group axis. A sum makes the initial logits grow with the map's area.
    * ``coordinate_init``: ``"spread"`` or ``"zero"`` (original) first-layer biases of the
      positional MLPs (:class:`gsa.nn.positional.CoordinateMLP`).
    * ``head_init``: ``"zero"`` or ``"whitening"`` (original) for the final 1×1 classifier.
      Zero starts every prediction at the uniform distribution (loss ``ln(num_classes)``).

    ``positional`` names the spatial positional encoding of every attention layer
    (:data:`gsa.nn.positional.ENCODINGS`; default ``"rowcol"``, the paper's row and column MLPs).

    ``head_channels`` sets the channels of each head's query, key and value in every attention
    layer (default ``None``: half the layer's output channels, the original code's, so each head is
    as wide as that; not in the paper). Narrow heads (``channels // num_heads``, the usual
    multi-head split) keep the projections' size as heads are added; the scores and the softmax
    still cost per head (8 heads of 3 channels take 1.8× the step time of 2 heads of 12 in the
    ``mini`` network on a CPU).

    ``input_pool`` (default 1: none; not in the paper) averages the input over ``k×k`` blocks
    before the lifting layer, so every layer runs on ``k²`` times fewer pixels and each window
    covers ``k`` times more of the image. Average pooling commutes with quarter turns and mirrors
    when the image side is a multiple of ``k``, so invariance stays exact there.
    """

    group: str = "p4"
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 20
    num_heads: int = 9
    lifting_heads: int | None = None
    head_channels: int | None = None
    block_sizes: tuple[int, ...] = (2, 3)
    expansion: int | tuple[int, ...] = 1
    crop: int | tuple[int, ...] = 0
    patch_size: int | None = 5
    norm: str = "layer"
    activation: str = "swish"
    normalize_between_layers: bool = False
    maxpool_after_last_block: bool = False
    input_dropout: float = 0.0
    dropout_after_pool: float = 0.0
    attention_dropout: float = 0.1
    value_dropout: float = 0.1
    whitening_scale: float = math.sqrt(2.0)
    readout: str = "mean"
    coordinate_init: str = "spread"
    head_init: str = "zero"
    positional: str = "rowcol"
    input_pool: int = 1
    backend: str = "auto"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The configuration as a plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GSANetConfig":
        """Rebuild from :meth:`to_dict` output; lists become tuples, unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GSANetConfig fields: {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for key in ("block_sizes", "expansion", "crop"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def default_pretrained_cfg(cfg: GSANetConfig) -> dict[str, Any]:
    """The :attr:`GSANet.pretrained_cfg` of a freshly built network: no input normalisation known.

    Keys (timm's names where they exist): ``architecture``, ``num_classes``, ``in_channels``,
    ``group``, ``classifier`` (the head's attribute name), and what training records
    (:func:`gsa.models.load` fills them in): ``input_size`` ``(C, H, W)`` of the training images,
    per-channel ``mean`` / ``std`` (``None``: inputs are used as given), ``dataset``.
    """
    return {
        "architecture": "gsanet",
        "num_classes": cfg.num_classes,
        "in_channels": cfg.in_channels,
        "group": cfg.group,
        "classifier": "head",
        "input_size": None,
        "mean": None,
        "std": None,
        "dataset": None,
    }


def _init_weight(m: nn.Module, scale: float) -> None:
    """``N(0, scale / sqrt(fan_in))`` weights, zero bias."""
    fan_in = m.weight[0].numel()
    with torch.no_grad():
        m.weight.normal_(0.0, scale / math.sqrt(fan_in))
        if m.bias is not None:
            m.bias.zero_()


def _check_choices(cfg: GSANetConfig) -> None:
    for name, options in (("readout", READOUTS), ("coordinate_init", COORDINATE_INITS), ("head_init", HEAD_INITS)):
        value = getattr(cfg, name)
        if value not in options:
            raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    ENCODINGS.canonical(cfg.positional)  # one-line ValueError listing the encodings
    if not isinstance(cfg.input_pool, int) or isinstance(cfg.input_pool, bool) or cfg.input_pool < 1:
        raise ValueError(f"input_pool must be a positive integer (1: no pooling), got {cfg.input_pool!r}")
    hc = cfg.head_channels
    if hc is not None and (not isinstance(hc, int) or isinstance(hc, bool) or hc < 3):
        raise ValueError(
            f"head_channels must be None (half the layer's channels) or an int >= 3 (a group-layer head "
            f"splits its channels into row, column and group parts), got {hc!r}"
        )


def make_input_pool(k: int) -> nn.Module:
    """``GSANetConfig.input_pool``'s module: ``k×k`` average pooling, or the identity for ``k = 1``."""
    return nn.AvgPool2d(k) if k > 1 else nn.Identity()


class GSANet(nn.Module):
    """Group equivariant stand-alone self-attention network.

    ``(B, C_in, X, Y) → (B, num_classes)`` logits, invariant to the group's exact transformations
    (quarter turns, mirrors) of the input when every max-pool sees an even spatial size.
    Read-out: final point-wise linear map, mean (or, as in the original, sum) over space, max over
    the group axis.
    """

    def __init__(self, config: GSANetConfig | None = None, **overrides):
        super().__init__()
        cfg = config or GSANetConfig()
        if overrides:
            cfg = GSANetConfig.from_dict({**cfg.to_dict(), **overrides})
        _check_choices(cfg)
        self.config = cfg
        self.group = _groups.get(cfg.group)
        n_blocks = len(cfg.block_sizes)
        n_layers = sum(cfg.block_sizes)
        expansion = _per_item(cfg.expansion, n_blocks, "expansion")
        crops = _per_item(cfg.crop, n_layers, "crop")

        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.input_pool = make_input_pool(cfg.input_pool)
        c = cfg.channels
        self.lifting = LiftingSelfAttention(
            self.group,
            cfg.in_channels,
            c,
            num_heads=cfg.lifting_heads or cfg.num_heads,
            mid_channels=cfg.head_channels,
            patch_size=cfg.patch_size,
            attention_dropout=cfg.attention_dropout,
            backend=cfg.backend,
            coordinate_init=cfg.coordinate_init,
            positional=cfg.positional,
        )
        self.lifting_norm = make_norm(cfg.norm, c)
        self.lifting_act = make_activation(cfg.activation)

        layers: list[nn.Module] = []
        crop_iter = iter(crops)
        for b, size in enumerate(cfg.block_sizes):
            out_c = c
            for i in range(size):
                if i == 0:
                    out_c = expansion[b] * c
                layers.append(
                    TransformerBlock(
                        self.group,
                        c,
                        out_c,
                        num_heads=cfg.num_heads,
                        mid_channels=cfg.head_channels,
                        patch_size=cfg.patch_size,
                        crop=next(crop_iter),
                        attention_dropout=cfg.attention_dropout,
                        value_dropout=cfg.value_dropout,
                        norm=cfg.norm,
                        activation=cfg.activation,
                        backend=cfg.backend,
                        coordinate_init=cfg.coordinate_init,
                        positional=cfg.positional,
                    )
                )
                if cfg.normalize_between_layers:
                    layers += [make_norm(cfg.norm, out_c), make_activation(cfg.activation)]
                c = out_c
            if b < n_blocks - 1 or cfg.maxpool_after_last_block:
                layers.append(nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2)))
                if cfg.dropout_after_pool > 0:
                    layers.append(nn.Dropout(cfg.dropout_after_pool))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Conv3d(c, cfg.num_classes, kernel_size=1, bias=False)
        self._min_size = self.min_input_size()
        #: timm-style record of what the network expects (see :func:`default_pretrained_cfg`)
        self.pretrained_cfg: dict[str, Any] = default_pretrained_cfg(cfg)
        self.reset_parameters(cfg.whitening_scale)

    def reset_parameters(self, whitening_scale: float = math.sqrt(2.0)) -> None:
        """Weights ``N(0, whitening_scale / sqrt(fan_in))``, biases zero (linear and 1×1 conv layers);
        then the positional encodings' first biases and the classifier per ``coordinate_init`` and
        ``head_init``."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d, nn.Conv2d)):
                _init_weight(m, whitening_scale)
        for m in self.modules():
            if isinstance(m, CoordinateMLP):  # also in layers without a swappable encoding (gsa.scale)
                m.reset_bias()
            if isinstance(m, (LiftingSelfAttention, GroupSelfAttention)):
                m.positional.reset_bias()  # idempotent: the biases follow from the weights
        if self.config.head_init == "zero":
            nn.init.zeros_(self.head.weight)

    def min_input_size(self) -> int:
        """The smallest image side the network takes: each crop must leave a pixel, each 2×2 max-pool
        a 1×1 map, times ``input_pool`` (``rotmnist``: 22; ``cifar10``: 4). Smaller inputs raise a ``ValueError`` in
        :meth:`features` / :meth:`forward`."""
        need = 1
        for layer in reversed(self.blocks):
            if isinstance(layer, nn.MaxPool3d):
                need *= 2
            elif isinstance(getattr(layer, "crop", None), Crop):  # a block (of any layer type) that crops
                need += 2 * layer.crop.size
        return need * self.config.input_pool

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Lifted features before the read-out: ``(B, C, |H|, X', Y')``."""
        if x.dim() == 4 and min(x.shape[-2:]) < self._min_size:
            m = self._min_size
            raise ValueError(
                f"GSANet needs images of at least {m}x{m} pixels (its crops and 2x2 max-pools), "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )
        x = self.input_pool(self.input_dropout(x))
        x = self.lifting_act(self.lifting_norm(self.lifting(x)))
        return self.blocks(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's name for :meth:`features`: ``(B, C_in, X, Y)`` → ``(B, C, |H|, X', Y')``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The read-out of :meth:`forward_features`' output ``(B, C, |H|, X', Y')``: the classifier,
        the mean (or sum) over space, the max over the group axis → ``(B, num_classes)``.

        ``pre_logits=True`` returns the features pooled over space, ``(B, C, |H|)``, instead (the
        classifier is linear, so ``head`` on them, then the max over the group, gives the logits
        up to round-off).
        """
        if pre_logits:
            return self._pool(x)
        return self._pool(self.head(x)).amax(dim=-1)  # head: (B, classes, |H|, X', Y')

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1)) if self.config.readout == "mean" else x.sum(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, X, Y)`` → ``(B, num_classes)`` invariant logits."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final 1×1 classifier (``Conv3d`` over ``(C, |H|, X', Y')`` maps), as in timm."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new one with ``num_classes`` outputs (on the old one's device
        and dtype, initialised per ``head_init``); ``config`` and ``pretrained_cfg`` follow."""
        old = self.head
        self.head = nn.Conv3d(
            old.in_channels, num_classes, kernel_size=1, bias=False, device=old.weight.device, dtype=old.weight.dtype
        )
        _init_weight(self.head, self.config.whitening_scale)
        if self.config.head_init == "zero":
            nn.init.zeros_(self.head.weight)
        self.config = replace(self.config, num_classes=num_classes)
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Raw images → this network's input, normalised as in training (``pretrained_cfg``).

        ``images``: ``(B, C, H, W)`` or one ``(C, H, W)`` image, uint8 ``0..255`` or floats in
        ``[0, 1]``. Returns float32 ``(B, C, H, W)`` ``(x - mean) / std`` per channel on the
        network's device (``x`` unchanged when ``pretrained_cfg`` has no mean/std).
        """
        x = torch.as_tensor(images)
        x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images (B, {self.config.in_channels}, H, W) or ({self.config.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        device = self.head.weight.device
        x = x.to(device)
        mean, std = self.pretrained_cfg.get("mean"), self.pretrained_cfg.get("std")
        if mean is None or std is None:
            return x
        m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return (x - m) / s

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (the Hugging Face hub
        layout; see :func:`gsa.models.pretrained.save_pretrained`); returns the directory."""
        from .pretrained import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, map_location: Any = "cpu") -> "GSANet":
        """The network saved by :meth:`save_pretrained` in a local folder (or, with
        ``huggingface_hub`` installed, a hub repository id), in eval mode
        (:func:`gsa.models.pretrained.from_pretrained`)."""
        from .pretrained import from_pretrained

        return from_pretrained(name_or_path, map_location=map_location)

    def num_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable, by default) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        cfg = self.config
        att = "global" if cfg.patch_size is None else f"local {cfg.patch_size}x{cfg.patch_size}"
        return f"group={self.group.name}, {att}, params={self.num_parameters():,}"
