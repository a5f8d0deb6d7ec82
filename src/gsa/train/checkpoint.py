"""Atomic checkpoints: weights in safetensors, training state in a separate ``.state.pt``.

Files in a run directory:

* ``best.safetensors`` - weights of the best epoch on the validation set;
* ``last.safetensors`` - the most recent weights;
* ``last.state.pt``    - optimizer / scheduler / grad-scaler / RNG states, epoch, step, best metric;
* ``last.json``        - the manifest of the last pair: its step and the SHA-256 of the bytes of
  ``last.safetensors`` and of ``last.state.pt``.

Every file is written to a temporary file ``.<name>.<random>.tmp`` in the same directory, flushed,
fsync'ed and moved into place with :func:`os.replace`, so a crash never leaves a half-written
file. Weight files carry a SHA-256 of their tensor data in the safetensors metadata;
:func:`load_weights` checks it, so corruption is reported, not silently used.

The last pair (weights + training state) must change together, which two renames cannot do, so
:func:`save_last` writes it in this order:

1. finish an earlier save that died after its switch (:func:`finish_last`);
2. write the new pair as ``last.next.safetensors`` and ``last.next.state.pt`` (atomically each);
3. the switch: replace ``last.json`` (atomically) with the new pair's step and checksums;
4. move ``last.next.*`` over ``last.*`` (os.replace), which also drops the previous pair.

The manifest alone says which pair is current: each of its files is the one of
``last.next.<x>`` / ``last.<x>`` whose SHA-256 matches (:func:`find_last`). A crash before the
switch leaves the previous pair current (the ``last.next.*`` files are an incomplete generation,
removed on the next start); a crash after it leaves the new pair current, and the next start or save
completes step 4. ``last.safetensors`` holds the current weights except in a crash between steps 3
and 4 (then it holds the previous pair's, until the run is resumed); ``gsa eval RUN --checkpoint last``
and :func:`resolve_weights` always find the current ones. The training state is loaded only after
its bytes match the manifest's SHA-256. A run directory written before manifests existed
(``last.safetensors`` + ``last.state.pt``, no ``last.json``) is read as a pair without checksum.
:func:`clean_run_dir` removes stale temporaries when a run starts or resumes.

The reading side (:func:`read_weights`, :func:`resolve_weights`, :func:`find_last`, the file names)
lives in :mod:`gsa.models.weightfile`, so that :func:`gsa.models.load` needs no training code; it is
re-exported here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch

from ..errors import CheckpointError
from ..models.weightfile import (
    BEST,
    FORMAT,
    LAST,
    MANIFEST,
    MANIFEST_FORMAT,
    NEXT,
    STATE,
    LastPair,
    encode_weights,
    find_last,
    read_weights,
    resolve_weights,
)
from ..models.weightfile import file_sha256 as _file_sha256
from ..models.weightfile import read_manifest as _read_manifest

__all__ = [
    "BEST",
    "LAST",
    "STATE",
    "MANIFEST",
    "NEXT",
    "FORMAT",
    "MANIFEST_FORMAT",
    "atomic_write_bytes",
    "state_dict_tensors",
    "unwrap",
    "weights_bytes",
    "save_weights",
    "read_weights",
    "load_weights",
    "state_bytes",
    "save_state",
    "load_state",
    "resolve_weights",
    "LastPair",
    "has_last",
    "find_last",
    "save_last",
    "finish_last",
    "clean_run_dir",
]

_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's names in atomic_write_bytes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace + dir fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make renames and removals in ``directory`` durable (where the platform allows it)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def state_dict_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the (unwrapped) model's state dict, ready for safetensors."""
    model = unwrap(model)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def weights_bytes(model: torch.nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> bytes:
    """The model's weights as safetensors bytes, with ``metadata`` and a checksum of the tensors."""
    return encode_weights(state_dict_tensors(model), metadata)


def save_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Save the model's weights to ``path`` (safetensors, atomic, with a checksum)."""
    atomic_write_bytes(path, weights_bytes(model, metadata))


def load_weights(path: str | os.PathLike, model: torch.nn.Module, cfg: Any = None) -> dict[str, str]:
    """Load a weight file into ``model`` (strict); return the file's metadata.

    The network the file records (:mod:`gsa.train.identity`) must be ``model`` (built from the
    :class:`~gsa.train.config.TrainConfig` ``cfg``, when given): a :class:`CheckpointError` names the
    fields that differ, e.g. p8 weights for a p4m model, or local for global attention.
    """
    from .identity import check_identity

    tensors, meta = read_weights(path)
    target = unwrap(model)
    check_identity(meta, target, cfg, path)
    try:
        target.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{path}: checkpoint does not match the model ({first})") from None
    return meta


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """The training state dict serialized with :func:`torch.save`."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save the training state dict atomically with :func:`torch.save`."""
    atomic_write_bytes(path, state_bytes(state))


def load_state(path: str | os.PathLike, sha256: Optional[str] = None) -> dict[str, Any]:
    """Load a training state written by :func:`save_state` (``weights_only`` loading).

    With ``sha256`` (from ``last.json``) the file's bytes must match it before they are unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path}: corrupt training state (SHA-256 differs from the one in {MANIFEST})")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt training state ({reason[:200]})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a gsa training state")
    return state


# ---------------------------------------------------------------------- the last pair


def has_last(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a last pair to resume from (not verified: see :func:`find_last`)."""
    run_dir = Path(run_dir)
    return (run_dir / MANIFEST).is_file() or ((run_dir / LAST).is_file() and (run_dir / STATE).is_file())


def save_last(
    run_dir: str | os.PathLike, model: torch.nn.Module, metadata: Mapping[str, Any], state: Mapping[str, Any]
) -> None:
    """Write the last pair: ``model``'s weights (with ``metadata``) and the training ``state`` (with
    its ``"step"``), switched in by one atomic replace of ``last.json`` (steps in the module docstring)."""
    run_dir = Path(run_dir)
    finish_last(run_dir)
    blobs = {LAST: weights_bytes(model, metadata), STATE: state_bytes(state)}
    for name, data in blobs.items():
        atomic_write_bytes(run_dir / NEXT[name], data)
    manifest = {
        "format": MANIFEST_FORMAT,
        "step": int(state["step"]),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()},
    }
    atomic_write_bytes(run_dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())  # the switch
    finish_last(run_dir)


def finish_last(run_dir: str | os.PathLike) -> list[str]:
    """Move a switched-in ``last.next.*`` file over ``last.*``; remove one that ``last.json`` does not
    name (a pair whose save died before its switch). Safe to repeat at any point; returns the names
    removed."""
    run_dir = Path(run_dir)
    staged = [(name, run_dir / NEXT[name]) for name in NEXT if (run_dir / NEXT[name]).is_file()]
    if not staged:
        return []
    files = (_read_manifest(run_dir) or {"files": {}})["files"]
    removed = []
    for name, path in staged:
        if files.get(name) == _file_sha256(path):
            os.replace(path, run_dir / name)
        else:
            os.unlink(path)
            removed.append(path.name)
    _fsync_dir(run_dir)
    return removed


def clean_run_dir(run_dir: str | os.PathLike, also: Iterable[str] = ()) -> list[str]:
    """Tidy ``run_dir`` before a run starts or resumes in it: :func:`finish_last`, then remove the
    temporaries that :func:`atomic_write_bytes` left for the checkpoint files or the names in ``also``
    (``.<name>.<8 random characters>.tmp``; nothing else). Returns the names removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    try:
        removed = finish_last(run_dir)
    except CheckpointError:  # an unreadable last.json: keep last.next.*; resuming reports the manifest
        removed = []
    ours = {BEST, MANIFEST, *NEXT, *NEXT.values(), *also}
    for path in sorted(run_dir.iterdir()):
        match = _TEMP.fullmatch(path.name)
        if match and match["name"] in ours and path.is_file():
            os.unlink(path)
            removed.append(path.name)
    return removed
