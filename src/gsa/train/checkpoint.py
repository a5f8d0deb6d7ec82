"""Atomic checkpoints: weights in safetensors, training state in a separate ``.state.pt``.

Files in a run directory:

* ``best.safetensors`` - weights of the best epoch on the validation set;
* ``last.safetensors`` - the most recent weights;
* ``last.state.pt``    - optimizer / scheduler / grad-scaler / RNG states, epoch, step, best metric.

Every file is written to a temporary file in the same directory, flushed, fsync'ed and
moved into place with :func:`os.replace`, so a crash never leaves a half-written
checkpoint. Weight files carry a SHA-256 of their tensor data in the safetensors
metadata; :func:`load_weights` checks it, so corruption is reported, not silently used.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..errors import CheckpointError

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last.state.pt"
FORMAT = "gsa-weights-1"


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
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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


def save_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Save the model's weights to ``path`` (safetensors, atomic, with a checksum)."""
    from safetensors.torch import save

    tensors = state_dict_tensors(model)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["format"] = FORMAT
    meta["sha256"] = _digest(tensors)
    atomic_write_bytes(path, save(tensors, metadata=meta))


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
    if expected is not None and _digest(tensors) != expected:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch)")
    return tensors, meta


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


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save the training state dict atomically with :func:`torch.save`."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training state written by :func:`save_state` (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt training state ({reason[:200]})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a gsa training state")
    return state


def resolve_weights(path: str | os.PathLike, which: str = "best") -> Path:
    """A run directory -> its ``{which}.safetensors``; a file path is returned unchanged."""
    p = Path(path)
    if p.is_dir():
        f = p / f"{which}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{f}: checkpoint not found (has this run finished an epoch?)")
        return f
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint")
    return p
