"""Getting a trained GSA-Net back: :func:`load` (a run directory or a weight file) and the Hugging
Face hub folder layout (:func:`save_pretrained` / :func:`from_pretrained`).

The weight files that training writes carry the network's full config and its input
normalisation in their metadata (:mod:`gsa.models.weightfile`), so one file is enough: no
dataset, no ``config.json`` of the run, no training code. The loaded network computes logits from
*normalised* inputs, like the one in training; :meth:`GSANet.preprocess` applies the recorded
normalisation to raw images (uint8 or ``[0, 1]`` floats), and ``net.pretrained_cfg`` holds it
(``mean``, ``std``, ``input_size``, ...), as timm does.

A hub folder holds ``config.json`` (``{"model_type": "gsanet", "config": {...GSANetConfig},
"pretrained_cfg": {...}}``) and ``model.safetensors`` (with the same metadata as a training
file, so it also loads alone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from ..errors import CheckpointError, ConfigError
from ..scale import is_scale_group
from .gsanet import GSANet, GSANetConfig, default_pretrained_cfg
from .scalenet import ScaleGSANet
from .weightfile import INPUT_KEY, MODEL_CONFIG_KEY, encode_weights, read_record, read_weights, resolve_weights

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "model_records", "load", "save_pretrained", "from_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_INPUT_FIELDS = ("input_size", "mean", "std", "dataset")


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def model_records(
    config: GSANetConfig,
    *,
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
    input_size: Optional[Sequence[int]],
    dataset: Optional[str] = None,
) -> dict[str, str]:
    """The weight-file metadata entries that let :func:`load` rebuild a network from the file alone:
    ``model_config`` (the full ``config``) and ``input`` (``mean`` / ``std`` of the per-channel
    normalisation of ``[0, 1]`` images, ``None`` for none; ``input_size`` ``(C, H, W)``; ``dataset``)."""
    record = {
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "input_size": [int(v) for v in input_size] if input_size is not None else None,
        "dataset": dataset,
    }
    return {
        MODEL_CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        INPUT_KEY: json.dumps(record, sort_keys=True),
    }


def _pretrained_cfg(config: GSANetConfig, record: Mapping[str, Any]) -> dict[str, Any]:
    cfg = default_pretrained_cfg(config)
    cfg.update({k: _tuple(record.get(k)) for k in _INPUT_FIELDS})
    return cfg


def _build(config: Mapping[str, Any], path: Any) -> GSANet:
    try:
        cfg = GSANetConfig.from_dict(dict(config))
        return (ScaleGSANet if is_scale_group(cfg.group) else GSANet)(cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the recorded GSA-Net ({str(exc).splitlines()[0]})") from None


def _finish(net: GSANet, tensors: Mapping[str, torch.Tensor], path: Any, map_location: Any) -> GSANet:
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{path}: weights do not match the recorded network ({first})") from None
    return net.to(map_location).eval()


def load(path: str | os.PathLike, *, which: str = "best", map_location: Any = "cpu") -> GSANet:
    """A trained GSA-Net, in eval mode, from a run directory, a weight file or a hub folder.

    Args:
        path: a run directory of ``gsa train`` (its ``{which}.safetensors``), a weight file it wrote
            (``best.safetensors``, ``last.safetensors``, or a copy: the file alone is enough), or a
            folder written by :func:`save_pretrained`.
        which: ``"best"`` (validation) or ``"last"`` weights of a run directory.
        map_location: device the network is moved to.

    Returns:
        The :class:`GSANet` with its ``config`` and, in ``pretrained_cfg``, the input normalisation
        it was trained with; ``net(net.preprocess(images))`` gives its logits for raw images.

    Raises :class:`CheckpointError` for a missing, corrupt or foreign file, or one written before gsa
    recorded the network in it (rebuild that network and use :func:`gsa.train.checkpoint.load_weights`).
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    p = Path(path)
    if p.is_dir() and (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file():
        return from_pretrained(p, map_location=map_location)
    file = resolve_weights(p, which)
    tensors, meta = read_weights(file)
    config, record = read_record(meta, MODEL_CONFIG_KEY, file), read_record(meta, INPUT_KEY, file)
    if config is None or record is None:
        raise CheckpointError(
            f"{file}: no record of the network and its input normalisation (written by an older "
            "gsa or for another model); build the model and use gsa.train.checkpoint.load_weights"
        )
    net = _build(config, file)
    net.pretrained_cfg = _pretrained_cfg(net.config, record)
    return _finish(net, tensors, file, map_location)


def save_pretrained(net: GSANet, directory: str | os.PathLike) -> Path:
    """Write ``net`` into ``directory`` (created if needed) as ``config.json`` + ``model.safetensors``,
    the Hugging Face hub layout; :func:`from_pretrained` and :func:`load` read it back exactly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pcfg = net.pretrained_cfg
    meta = model_records(
        net.config,
        mean=pcfg.get("mean"),
        std=pcfg.get("std"),
        input_size=pcfg.get("input_size"),
        dataset=pcfg.get("dataset"),
    )
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    (directory / WEIGHTS_NAME).write_bytes(encode_weights(tensors, meta))
    doc = {"model_type": "gsanet", "config": net.config.to_dict(), "pretrained_cfg": pcfg}
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def _local_folder(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{name_or_path}: no such folder; without huggingface_hub only local folders are "
            "supported (pip install huggingface_hub to download from the hub)"
        ) from None
    return Path(snapshot_download(repo_id=str(name_or_path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))


def from_pretrained(name_or_path: str | os.PathLike, *, map_location: Any = "cpu") -> GSANet:
    """The network in a folder written by :func:`save_pretrained`, in eval mode.

    ``name_or_path``: a local folder; anything else is taken as a Hugging Face hub repository id and
    downloaded with ``huggingface_hub.snapshot_download`` when that package is installed (else a
    :class:`CheckpointError` says only local folders are supported).
    """
    folder = _local_folder(name_or_path)
    config_file = folder / CONFIG_NAME
    try:
        doc = json.loads(config_file.read_text(encoding="utf-8"))
        config, pcfg = doc["config"], doc["pretrained_cfg"]
        if doc.get("model_type") != "gsanet" or not isinstance(config, dict) or not isinstance(pcfg, dict):
            raise ValueError("not a GSA-Net")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise CheckpointError(f"{config_file}: not a gsa model config ({reason})") from None
    tensors, _ = read_weights(folder / WEIGHTS_NAME)
    net = _build(config, config_file)
    net.pretrained_cfg = {k: _tuple(v) for k, v in pcfg.items()}
    return _finish(net, tensors, folder / WEIGHTS_NAME, map_location)
