"""A GSA-Net on the dilation–translation group (paper App. E) with scale-invariant logits.

:class:`ScaleGSANet` is :class:`~gsa.models.GSANet` with the scale layers of :mod:`gsa.scale`: a
lifting layer to ``(B, C, S, X, Y)``, blocks of scale group self-attention, pooling, and a read-out
that pools over space and takes the max over the scale axis. It takes the same
:class:`~gsa.models.GSANetConfig`, with ``group`` a scale-group name (``"scale2x3"``) and
``extra={"scale_window": 3}`` (the key scales ``s·2^m``, ``|m| ≤ 1``, of the group layers).
``gsa.models.create`` builds one when the group is a scale group (preset ``"scalemnist"``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .. import scale as _scale
from ..nn.blocks import Crop, make_activation, make_norm
from ..nn.positional import ENCODINGS
from .gsanet import GSANet, GSANetConfig, _check_choices, _per_item, default_pretrained_cfg, make_input_pool

__all__ = ["ScaleBlock", "ScaleGSANet", "SCALE_READOUTS"]

#: Read-outs of :class:`ScaleGSANet` over space (then a max over the scale axis).
SCALE_READOUTS = ("max", "mean", "sum")


class ScaleBlock(nn.Module):
    """:class:`gsa.nn.blocks.TransformerBlock` with :class:`gsa.scale.ScaleGroupSelfAttention`.

    ``(B, C_in, S, X, Y) → (B, C_out, S, X − 2·crop, Y − 2·crop)``; norms, MLP and shortcut act
    point-wise, so they commute with the scale action::

        a = Crop(Dropout(Act(Norm(GSA(Act(Norm(x))))))) + Crop(shortcut(x))
        out = Norm(W2 · Act(Norm(W1 · a))) + a
    """

    def __init__(self, group, in_channels: int, out_channels: int, *, crop: int = 0, norm: str = "layer",
                 activation: str = "swish", value_dropout: float = 0.0, **attention):  # fmt: skip
        super().__init__()
        self.attention = _scale.ScaleGroupSelfAttention(group, in_channels, out_channels, **attention)
        self.pre = nn.Sequential(make_norm(norm, in_channels), make_activation(activation))
        self.post = nn.Sequential(make_norm(norm, out_channels), make_activation(activation), nn.Dropout(value_dropout))
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.crop = Crop(crop)
        hidden = out_channels // 2
        self.mlp = nn.Sequential(
            nn.Conv3d(out_channels, hidden, 1),
            make_norm(norm, hidden),
            make_activation(activation),
            nn.Conv3d(hidden, out_channels, 1),
            make_norm(norm, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, S, X, Y)`` → ``(B, C_out, S, X', Y')``."""
        a = self.crop(self.post(self.attention(self.pre(x)))) + self.crop(self.shortcut(x))
        return self.mlp(a) + a


class ScaleGSANet(GSANet):
    """Scale-equivariant GSA-Net: ``(B, C_in, X, Y) → (B, num_classes)`` logits, invariant to dilations
    of the input up to the discretisation (see ``docs/scale.md``).

    Built from a :class:`~gsa.models.GSANetConfig` (or its fields as keywords) whose ``group`` is a
    scale group (:func:`gsa.scale.get`) and ``patch_size`` an odd window; ``extra["scale_window"]``
    (default 3) sets the key scales of the group layers. ``readout`` pools the class maps over
    space before the max over the scale axis:

    * ``"max"``: the max over space; invariant as long as the maximum stays in the frame.
    * ``"mean"``: the mean over the (fixed) frame; a dilated object covers more of it, so this is
      not invariant, and is offered for comparison.
    * ``"sum"``: the sum over space weighted by the Haar measure, ``s^(−2)`` at scale ``s`` (a
      dilated object covers ``s²`` times the pixels; invariant for objects inside the frame whose
      class maps vanish around them).

    Everything else (``features``, ``forward_head``, ``preprocess``, ``num_parameters``) is
    :class:`~gsa.models.GSANet`'s.
    """

    def __init__(self, config: GSANetConfig | None = None, **overrides):
        nn.Module.__init__(self)
        cfg = config or GSANetConfig(group="scale2x3")
        if overrides:
            cfg = GSANetConfig.from_dict({**cfg.to_dict(), **overrides})
        if cfg.readout not in SCALE_READOUTS:
            raise ValueError(f"unknown readout {cfg.readout!r}; expected one of {', '.join(SCALE_READOUTS)}")
        _check_choices(replace(cfg, readout="mean"))  # the other choices as GSANet checks them
        if ENCODINGS.canonical(cfg.positional) != "rowcol":
            raise ValueError(f"the scale layers have the row/column positional encoding only, got {cfg.positional!r}")
        self.config = cfg
        self.group = _scale.get(cfg.group)
        att = dict(patch_size=cfg.patch_size, attention_dropout=cfg.attention_dropout, backend=cfg.backend,
                   coordinate_init=cfg.coordinate_init, mid_channels=cfg.head_channels)  # fmt: skip
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.input_pool = make_input_pool(cfg.input_pool)
        c = cfg.channels
        self.lifting = _scale.ScaleLiftingSelfAttention(
            self.group, cfg.in_channels, c, num_heads=cfg.lifting_heads or cfg.num_heads, **att
        )
        self.lifting_norm = make_norm(cfg.norm, c)
        self.lifting_act = make_activation(cfg.activation)
        layers, c = self._blocks(cfg, att)
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Conv3d(c, cfg.num_classes, kernel_size=1, bias=False)
        self._min_size = self.min_input_size()
        self.pretrained_cfg = default_pretrained_cfg(cfg)
        self.reset_parameters(cfg.whitening_scale)

    def _blocks(self, cfg: GSANetConfig, att: dict) -> tuple[list[nn.Module], int]:
        """The blocks and pools after the lifting layer, and their output channels."""
        expansion = _per_item(cfg.expansion, len(cfg.block_sizes), "expansion")
        crops = iter(_per_item(cfg.crop, sum(cfg.block_sizes), "crop"))
        window = int(cfg.extra.get("scale_window", 3))
        layers: list[nn.Module] = []
        c = cfg.channels
        for b, size in enumerate(cfg.block_sizes):
            for i in range(size):
                out_c = expansion[b] * c if i == 0 else c
                layers.append(ScaleBlock(
                    self.group, c, out_c, crop=next(crops), norm=cfg.norm, activation=cfg.activation,
                    value_dropout=cfg.value_dropout, num_heads=cfg.num_heads, scale_window=window, **att,
                ))  # fmt: skip
                if cfg.normalize_between_layers:
                    layers += [make_norm(cfg.norm, out_c), make_activation(cfg.activation)]
                c = out_c
            if b < len(cfg.block_sizes) - 1 or cfg.maxpool_after_last_block:
                layers.append(nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2)))
                if cfg.dropout_after_pool > 0:
                    layers.append(nn.Dropout(cfg.dropout_after_pool))
        return layers, c

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, X, Y)`` → ``(B, C, S)`` per :attr:`config.readout` (``"sum"``: Haar-weighted)."""
        readout = self.config.readout
        if readout == "max":
            return x.amax(dim=(-2, -1))
        if readout == "mean":
            return x.mean(dim=(-2, -1))
        haar = torch.tensor([s**-2.0 for s in self.group.scales], dtype=x.dtype, device=x.device)
        return x.sum(dim=(-2, -1)) * haar

    def extra_repr(self) -> str:
        return f"group={self.group.name} (scales {self.group.scales}), readout={self.config.readout}, " + (
            f"local {self.config.patch_size}x{self.config.patch_size}, params={self.num_parameters():,}"
        )
