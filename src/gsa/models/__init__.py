"""GSA-Net models and the paper's presets (App. F): ``create(name, group=..., patch_size=...)``;
trained networks back from a run or a file: ``load(path)`` (:mod:`gsa.models.pretrained`).
A scale group (``group="scale2x3"``, preset ``"scalemnist"``) builds a :class:`ScaleGSANet`
(:mod:`gsa.models.scalenet`, paper App. E)."""

from __future__ import annotations

from dataclasses import replace

from .. import scale as _scale
from ..errors import ConfigError
from ..registry import Registry, normalize
from .gsanet import ORIGINAL_STYLE, GSANet, GSANetConfig
from .pretrained import load
from .scalenet import ScaleGSANet

__all__ = [
    "GSANet",
    "GSANetConfig",
    "ScaleGSANet",
    "ORIGINAL_STYLE",
    "CIFAR10_DROPOUT",
    "PRESETS",
    "create",
    "list_presets",
    "preset_config",
    "load",
]

#: CIFAR-10's dropout rates, both versions: ``"paper"`` as App. F.2 states them (input 0.3, 0.2
#: after each max-pool; the ``cifar10`` preset's) and ``"code"`` as the original code hard-codes
#: them (input 0.2, 0.3 after each max-pool; the ``cifar10`` training recipe's). Overrides for
#: :func:`create`: ``create("cifar10", group="mz2", **CIFAR10_DROPOUT["code"])``. Dropout has no
#: parameters: both give the same network, with the same parameter count.
CIFAR10_DROPOUT: dict[str, dict[str, float]] = {
    "paper": {"input_dropout": 0.3, "dropout_after_pool": 0.2},
    "code": {"input_dropout": 0.2, "dropout_after_pool": 0.3},
}

#: Architecture presets of the paper. Parameter counts equal the original code's exactly.
#: CIFAR-10 dropout follows the paper's text (:data:`CIFAR10_DROPOUT` ``["paper"]``).
#: ``scalemnist`` (not the paper's: App. E has no experiment) is a small :class:`ScaleGSANet` on the
#: dyadic scales 1, 2, 4 with a max read-out over space and scales (scale-invariant logits).
PRESETS: dict[str, GSANetConfig] = {
    "rotmnist": GSANetConfig(
        in_channels=1,
        num_classes=10,
        channels=20,
        block_sizes=(2, 3),
        expansion=1,
        crop=(2, 0, 2, 1, 1),
        normalize_between_layers=False,
        attention_dropout=0.1,
        value_dropout=0.1,
    ),
    "cifar10": GSANetConfig(
        in_channels=3,
        num_classes=10,
        channels=96,
        block_sizes=(2, 2, 2),
        expansion=(1, 2, 1),
        crop=0,
        normalize_between_layers=True,
        **CIFAR10_DROPOUT["paper"],
        attention_dropout=0.1,
        value_dropout=0.1,
    ),
    "pcam": GSANetConfig(
        in_channels=3,
        num_classes=2,
        channels=12,
        block_sizes=(0, 1, 2, 1),
        expansion=(1, 2, 2, 2),
        crop=(0, 2, 1, 1),
        normalize_between_layers=True,
        maxpool_after_last_block=True,
        attention_dropout=0.1,
        value_dropout=0.1,
    ),
    "scalemnist": GSANetConfig(
        group="scale2x3",
        in_channels=1,
        num_classes=10,
        channels=16,
        num_heads=4,
        block_sizes=(1, 2),
        expansion=1,
        crop=0,
        readout="max",
        attention_dropout=0.1,
        value_dropout=0.1,
        extra={"scale_window": 3},
    ),
}
# lookups by name (the PRESETS dict itself, so entries added to it are found too)
_PRESETS: Registry[GSANetConfig] = Registry(
    "preset", PRESETS, aliases={"mnist": "rotmnist", "rotated-mnist": "rotmnist", "cifar": "cifar10"}
)


def list_presets() -> list[str]:
    """Names accepted by :func:`create`, sorted (any spelling :mod:`gsa.registry` allows works)."""
    return sorted(_PRESETS.names())


def _patch(patch_size):
    if patch_size in (None, 0, "global", "none"):
        return None
    return patch_size


def preset_config(preset: str, *, group: str | None = None, patch_size: int | None = 5, **overrides) -> GSANetConfig:
    """The :class:`GSANetConfig` of a preset with ``group`` (``None``: the preset's own, ``p4`` for
    the paper's presets), ``patch_size`` and overrides applied."""
    base = _PRESETS.get(preset)
    cfg = replace(base, group=base.group if group is None else group, patch_size=_patch(patch_size))
    if overrides:
        cfg = GSANetConfig.from_dict({**cfg.to_dict(), **overrides})
    return cfg


def create(preset: str, *, group: str | None = None, patch_size: int | None = 5, **overrides) -> GSANet:
    """Build a preset GSA-Net.

    Args:
        preset: ``"rotmnist"``, ``"cifar10"``, ``"pcam"`` or ``"scalemnist"``.
        group: any name accepted by :func:`gsa.groups.get`, or a scale group of
            :func:`gsa.scale.get` (``"scale2x3"``), which builds a :class:`ScaleGSANet` (local
            attention only); ``None``: the preset's own (``p4``; ``scale2x3`` for ``scalemnist``).
        patch_size: odd ``k`` for ``k×k`` local attention; ``None`` (or 0, ``"global"``) for global.
        **overrides: any :class:`GSANetConfig` field (``num_classes``, ``norm``, ``activation``, ...).

    Example:
        >>> import gsa
        >>> net = gsa.models.create("rotmnist", group="p4")
        >>> net.num_parameters()
        44428
    """
    cfg = preset_config(preset, group=group, patch_size=patch_size, **overrides)
    scaled = _scale.is_scale_group(cfg.group) or normalize(str(cfg.group)).startswith("scale")  # its errors
    if not scaled and _scale.is_scale_group(_PRESETS.get(preset).group):
        raise ConfigError(
            f"the {preset} preset is a scale network: group must be a scale group "
            f"({', '.join(_scale.names())}), got {group!r}"
        )
    return ScaleGSANet(cfg) if scaled else GSANet(cfg)
