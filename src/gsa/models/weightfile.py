"""Reading gsa weight files and finding them in a run directory (the writing side is
:mod:`gsa.train.checkpoint`, whose module docstring describes the files and the save protocol).

A weight file is safetensors with string metadata: ``format`` (:data:`FORMAT`), ``sha256`` (of the
tensors, checked by :func:`read_weights`), and, for a GSA-Net written by training or by
:meth:`~gsa.models.GSANet.save_pretrained`, the records that make the file alone enough to rebuild
the network and apply it to raw images:

* ``model_config`` (:data:`MODEL_CONFIG_KEY`) - JSON of the full :class:`~gsa.models.GSANetConfig`;
* ``input`` (:data:`INPUT_KEY`) - JSON ``{"mean": [...], "std": [...], "input_size": [C, H, W],
  "dataset": name}``: the per-channel normalisation ``(x - mean) / std`` applied to images in
  ``[0, 1]`` during training (``null`` mean/std: none was applied) and the images' size.

This module lives in :mod:`gsa.models` so that :func:`gsa.models.load` can read run directories
without the training package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..errors import CheckpointError

__all__ = [
    "BEST",
    "LAST",
    "STATE",
    "MANIFEST",
    "NEXT",
    "FORMAT",
    "MANIFEST_FORMAT",
    "MODEL_CONFIG_KEY",
    "INPUT_KEY",
    "tensors_digest",
    "encode_weights",
    "read_weights",
    "read_record",
    "resolve_weights",
    "LastPair",
    "find_last",
    "file_sha256",
    "read_manifest",
]

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last.state.pt"
MANIFEST = "last.json"
NEXT = {LAST: "last.next.safetensors", STATE: "last.next.state.pt"}  # the pair being written
FORMAT = "gsa-weights-1"
MANIFEST_FORMAT = "gsa-last-1"
MODEL_CONFIG_KEY = "model_config"
INPUT_KEY = "input"


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of CPU tensors: their names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encode_weights(tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, Any]] = None) -> bytes:
    """Contiguous CPU ``tensors`` as safetensors bytes, with ``metadata`` (as strings), ``format`` and
    ``sha256``."""
    from safetensors.torch import save

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["format"] = FORMAT
    meta["sha256"] = tensors_digest(tensors)
    return save(dict(tensors), metadata=meta)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read and verify a weight file; any problem raises :class:`CheckpointError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            for name in fh.keys():
                tensors[name] = fh.get_tensor(name)
    except Exception as exc:  # safetensors raises several types for truncated/corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({reason})") from None
    expected = meta.get("sha256")
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch)")
    return tensors, meta


def read_record(meta: Mapping[str, str], key: str, path: Any) -> Optional[dict[str, Any]]:
    """The JSON object stored under ``key`` in a weight file's metadata; ``None`` when absent;
    :class:`CheckpointError` naming ``path`` when it is not a JSON object."""
    if key not in meta:
        return None
    try:
        record = json.loads(meta[key])
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: unreadable {key!r} record in the metadata")
    return record


def resolve_weights(path: str | os.PathLike, which: str = "best") -> Path:
    """A run directory -> its ``{which}.safetensors`` (for ``"last"``: the current pair's weights,
    see :func:`find_last`); a file path is returned unchanged."""
    p = Path(path)
    if p.is_dir():
        f = p / f"{which}.safetensors"
        found = find_last(p) if which == "last" else None
        if found is not None:
            return found.weights
        if not f.is_file():
            raise CheckpointError(f"{f}: checkpoint not found (has this run finished an epoch?)")
        return f
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint")
    return p


@dataclasses.dataclass(frozen=True)
class LastPair:
    """Where a run's current last pair is (see :mod:`gsa.train.checkpoint`).

    ``state_sha256`` and ``step`` come from ``last.json``; both are ``None`` for a run directory
    written before manifests existed.
    """

    weights: Path
    state: Path
    state_sha256: Optional[str] = None
    step: Optional[int] = None


def find_last(run_dir: str | os.PathLike) -> Optional[LastPair]:
    """The current last pair of ``run_dir``, or ``None`` when it has none; reads, never writes.

    With ``last.json``, each file is the one of ``last.next.<x>`` / ``last.<x>`` whose SHA-256
    matches it; none matching raises :class:`CheckpointError` naming the file.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        pair = LastPair(run_dir / LAST, run_dir / STATE)
        return pair if pair.weights.is_file() and pair.state.is_file() else None
    files = manifest["files"]
    return LastPair(
        _current(run_dir, LAST, files[LAST]), _current(run_dir, STATE, files[STATE]), files[STATE], manifest["step"]
    )


def _current(run_dir: Path, name: str, sha256: str) -> Path:
    for path in (run_dir / NEXT[name], run_dir / name):
        if path.is_file() and file_sha256(path) == sha256:
            return path
    what = "missing" if not (run_dir / name).is_file() else "corrupt (SHA-256 differs from the one in " + MANIFEST + ")"
    raise CheckpointError(f"{run_dir / name}: {what}; the last checkpoint cannot be used")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """``run_dir``'s ``last.json`` (checked: format, step, a SHA-256 per file of the pair); ``None``
    when there is none; :class:`CheckpointError` when it is unreadable."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes())
        files, step = manifest["files"], manifest["step"]
        ok = manifest["format"] == MANIFEST_FORMAT and isinstance(step, int) and isinstance(files, dict)
        ok = ok and all(isinstance(files.get(n), str) and re.fullmatch(r"[0-9a-f]{64}", files[n]) for n in NEXT)
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: corrupt checkpoint manifest (expected {MANIFEST_FORMAT} JSON)")
    return manifest
