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
"""

from __future__ import annotations

import dataclasses
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

__all__ = [
    "BEST", "LAST", "STATE", "MANIFEST", "NEXT", "FORMAT", "MANIFEST_FORMAT",
    "atomic_write_bytes", "state_dict_tensors", "unwrap", "weights_bytes", "save_weights", "read_weights", "load_weights",
    "state_bytes", "save_state", "load_state", "resolve_weights",
    "LastPair", "has_last", "find_last", "save_last", "finish_last", "clean_run_dir",
]

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last.state.pt"
MANIFEST = "last.json"
NEXT = {LAST: "last.next.safetensors", STATE: "last.next.state.pt"}  # the pair being written
FORMAT = "gsa-weights-1"
MANIFEST_FORMAT = "gsa-last-1"
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


def weights_bytes(model: torch.nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> bytes:
    """The model's weights as safetensors bytes, with ``metadata`` and a checksum of the tensors."""
    from safetensors.torch import save

    tensors = state_dict_tensors(model)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["format"] = FORMAT
    meta["sha256"] = _digest(tensors)
    return save(tensors, metadata=meta)


def save_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Save the model's weights to ``path`` (safetensors, atomic, with a checksum)."""
    atomic_write_bytes(path, weights_bytes(model, metadata))


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


# ---------------------------------------------------------------------- the last pair


@dataclasses.dataclass(frozen=True)
class LastPair:
    """Where a run's current last pair is (see the module docstring).

    ``state_sha256`` and ``step`` come from ``last.json``; both are ``None`` for a run directory
    written before manifests existed.
    """

    weights: Path
    state: Path
    state_sha256: Optional[str] = None
    step: Optional[int] = None


def has_last(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a last pair to resume from (not verified: see :func:`find_last`)."""
    run_dir = Path(run_dir)
    return (run_dir / MANIFEST).is_file() or ((run_dir / LAST).is_file() and (run_dir / STATE).is_file())


def find_last(run_dir: str | os.PathLike) -> Optional[LastPair]:
    """The current last pair of ``run_dir``, or ``None`` when it has none; reads, never writes.

    With ``last.json``, each file is the one of ``last.next.<x>`` / ``last.<x>`` whose SHA-256
    matches it; none matching raises :class:`CheckpointError` naming the file.
    """
    run_dir = Path(run_dir)
    manifest = _read_manifest(run_dir)
    if manifest is None:
        pair = LastPair(run_dir / LAST, run_dir / STATE)
        return pair if pair.weights.is_file() and pair.state.is_file() else None
    files = manifest["files"]
    return LastPair(_current(run_dir, LAST, files[LAST]), _current(run_dir, STATE, files[STATE]), files[STATE],
                    manifest["step"])


def _current(run_dir: Path, name: str, sha256: str) -> Path:
    for path in (run_dir / NEXT[name], run_dir / name):
        if path.is_file() and _file_sha256(path) == sha256:
            return path
    what = "missing" if not (run_dir / name).is_file() else "corrupt (SHA-256 differs from the one in " + MANIFEST + ")"
    raise CheckpointError(f"{run_dir / name}: {what}; the last checkpoint cannot be used")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / MANIFEST
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


def save_last(run_dir: str | os.PathLike, model: torch.nn.Module, metadata: Mapping[str, Any],
              state: Mapping[str, Any]) -> None:
    """Write the last pair: ``model``'s weights (with ``metadata``) and the training ``state`` (with
    its ``"step"``), switched in by one atomic replace of ``last.json`` (steps in the module docstring)."""
    run_dir = Path(run_dir)
    finish_last(run_dir)
    blobs = {LAST: weights_bytes(model, metadata), STATE: state_bytes(state)}
    for name, data in blobs.items():
        atomic_write_bytes(run_dir / NEXT[name], data)
    manifest = {"format": MANIFEST_FORMAT, "step": int(state["step"]),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}}
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
