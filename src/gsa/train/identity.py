"""Which network a weight file belongs to: recorded in its metadata, compared when it is loaded.

Tensor shapes alone do not tell networks apart: the weights of a p8 GSA-Net fit a p4m one, and
those of local attention fit global attention. So every weight file written by training records

* ``network`` - for a :class:`~gsa.models.GSANet`, the fields of its
  :class:`~gsa.models.GSANetConfig` that define the function it computes (group, patch size,
  channels, heads, blocks, norm, activation, read-out, ...; not the dropout probabilities, the
  kernel backend or the initialisation choices, which leave the weights' meaning unchanged);
* ``model_settings`` - the run's model-defining :class:`~gsa.train.config.TrainConfig` fields
  (``preset``, ``group``, ``patch_size``, ``norm``, ``activation``, ``model_args``), the only
  record available for other modules (models from :class:`~gsa.train.hooks.Hooks`).

:func:`check_identity` compares them with the module the weights are loaded into: the ``network``
record against a GSA-Net's own config, otherwise the ``model_settings`` against the run's config.
Files written before these records existed are compared on the ``preset`` / ``group`` /
``patch_size`` entries they have, and load when those agree. A ``network`` record written before a
field existed is read with the value such files implied (:data:`RECORD_DEFAULTS`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from torch import nn

from ..errors import CheckpointError
from ..models.weightfile import read_record
from .config import TrainConfig

__all__ = [
    "NETWORK_KEY",
    "SETTINGS_KEY",
    "NOT_DEFINING",
    "RECORD_DEFAULTS",
    "network_record",
    "settings_record",
    "identity_metadata",
    "check_identity",
]

NETWORK_KEY = "network"
SETTINGS_KEY = "model_settings"
#: GSANetConfig fields (and ``--model-arg`` keys) that leave the meaning of the weights unchanged:
#: dropout probabilities, the attention kernels, and choices that only set the initial weights.
#: (A dropout after pooling adds a layer when switched on; the strict key check sees that.)
NOT_DEFINING = frozenset(
    {
        "input_dropout",
        "dropout_after_pool",
        "attention_dropout",
        "value_dropout",
        "backend",
        "whitening_scale",
        "coordinate_init",
        "head_init",
        "extra",
    }
)
#: Defining GSANetConfig fields added after weight files with a ``network`` record were written, with
#: the value every such file implies (before ``positional`` existed, every layer used the row/column MLPs).
RECORD_DEFAULTS = {"positional": "rowcol"}
_LEGACY_KEYS = ("preset", "group", "patch_size")  # plain entries of files written before the records


def _canonical_group(name: Any) -> Any:
    """The canonical name of a group (``"R4"`` -> ``"p4"``); anything unknown unchanged."""
    from gsa.groups import get

    try:
        return get(name).name
    except Exception:  # not a group name we know: compare it as written
        return name


def _canonical_positional(name: Any) -> Any:
    """The registered name of a positional encoding (``"Row-Col"`` -> ``"rowcol"``); anything unknown unchanged."""
    from gsa.nn.positional import ENCODINGS

    return ENCODINGS.canonical(name) if name in ENCODINGS else name


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def network_record(model: nn.Module) -> Optional[dict[str, Any]]:
    """The defining fields of a GSA-Net's config (wrappers removed); None for any other module."""
    from gsa.models import GSANet

    from .checkpoint import unwrap

    net = unwrap(model)
    if not isinstance(net, GSANet):
        return None
    record = {k: v for k, v in net.config.to_dict().items() if k not in NOT_DEFINING}
    record["group"] = _canonical_group(record["group"])
    record["positional"] = _canonical_positional(record["positional"])
    return _plain(record)


def settings_record(cfg: TrainConfig) -> dict[str, Any]:
    """The model-defining fields of a run's config (``model_args`` without the :data:`NOT_DEFINING` keys)."""
    return _plain(
        {
            "preset": cfg.preset,
            "group": _canonical_group(cfg.group),
            "patch_size": cfg.patch_size,
            "norm": cfg.norm,
            "activation": cfg.activation,
            "model_args": {k: v for k, v in sorted(cfg.model_args.items()) if k not in NOT_DEFINING},
        }
    )


def identity_metadata(model: Optional[nn.Module], cfg: TrainConfig) -> dict[str, str]:
    """The metadata entries recording which network ``model`` (built from ``cfg``) is."""
    meta = {SETTINGS_KEY: json.dumps(settings_record(cfg), sort_keys=True)}
    network = network_record(model) if model is not None else None
    if network is not None:
        meta[NETWORK_KEY] = json.dumps(network, sort_keys=True)
    return meta


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"name recorded-value in the file, current-value in the model"`` for every field that differs."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} in the file, {b!r} in the model")
    return out


def _compare(meta: Mapping[str, str], model: nn.Module, cfg: Optional[TrainConfig], path: Any) -> list[str]:
    network = network_record(model)
    if network is not None and NETWORK_KEY in meta:
        return _differences({**RECORD_DEFAULTS, **read_record(meta, NETWORK_KEY, path)}, network)
    if cfg is None:
        return []
    if SETTINGS_KEY in meta:
        return _differences(read_record(meta, SETTINGS_KEY, path), settings_record(cfg))
    current = settings_record(cfg)
    legacy = {k: meta[k] for k in _LEGACY_KEYS if k in meta}  # written as str(value)
    if "group" in legacy:
        legacy["group"] = _canonical_group(legacy["group"])
    return _differences(legacy, {k: str(current[k]) for k in legacy})


def check_identity(
    meta: Mapping[str, str], model: nn.Module, cfg: Optional[TrainConfig] = None, path: Any = "weights"
) -> None:
    """Raise :class:`CheckpointError` naming the differing fields when the weight file's metadata ``meta``
    records another network than ``model`` (built from ``cfg``, when given); files without a record pass."""
    differences = _compare(meta, model, cfg, path)
    if differences:
        raise CheckpointError(f"{path}: weights of another model ({'; '.join(differences)}); not loaded")
