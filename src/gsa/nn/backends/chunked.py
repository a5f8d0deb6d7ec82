"""The chunked core (:mod:`gsa.nn.fastcore`) as two backends: ``"native"`` and ``"pytorch"``.

Both compute the factorised two-level softmax chunk by chunk with a recomputing backward; ``"native"``
runs the per-pixel steps in the C++ kernels of :mod:`gsa.nn.native` (CPU, float32/float64) behind the
custom operator ``gsa::chunked_attention`` (:mod:`.native_op`, kept whole by ``torch.compile`` and
``torch.export``); ``"pytorch"`` writes them with PyTorch operations (any device and dtype; under
``torch.compile`` it is traced operation by operation).
"""

from __future__ import annotations

import functools

import torch

from .. import fastcore as _fc
from .. import native as _native
from . import AttentionCall, compiling, native_op

__all__ = ["NATIVE", "PYTORCH", "attend", "chunk_elements"]

_MIN_CHUNK, _MAX_CHUNK = 1 << 20, 1 << 26


@functools.lru_cache(maxsize=None)
def _device_budget(device: torch.device) -> int:
    total = torch.cuda.get_device_properties(device).total_memory
    # about 16 chunk-sized float32 tensors are alive at once (scores, both softmaxes, weights, masks,
    # band matrices and their adjoints): total/256 elements keeps them within a quarter of the memory
    return int(min(max(total // 256, _MIN_CHUNK), _MAX_CHUNK))


def chunk_elements(call: AttentionCall) -> int:
    """Score elements per chunk for ``call``: ``call.chunk_elements``, except on CUDA when it was not
    given, where chunks are sized by the device's memory (``total/256``, between 2²⁰ and 2²⁶: one chunk
    per layer for rotMNIST-sized layers at small batches, instead of hundreds of CPU-cache-sized ones).
    Read once per device (no call into the driver per step)."""
    if call.auto_chunks and call.q.device.type == "cuda":
        return _device_budget(call.q.device)
    return call.chunk_elements


def op_classes(call: AttentionCall) -> torch.Tensor | None:
    """``call.classes`` on the queries' device for the native cores and the fused kernel, or None when there
    is one class (they broadcast it)."""
    if call.classes is None or call.group_scores is None or call.group_scores.shape[4] == 1:
        return None
    return call.classes.to(call.q.device)


def attend(call: AttentionCall, *, use_native: bool) -> torch.Tensor:
    """``(B, X, Y, |H|, dv)`` by the chunked core."""
    if use_native:
        return _attend_native(call)
    q, k, v = call.q, call.k, call.v
    B, X, Y, Gq, _ = q.shape
    Gk, H, p = k.shape[3], call.order, call.table.shape[-1]
    spec = _fc.Spec(call.neighbourhood, X, Y, B, Gq, Gk, H, p, op_classes(call), chunk_elements(call), call.dropout)
    return _fc.attend(
        q,
        spec.pad(k),
        spec.pad(v),
        call.table,
        call.group_scores,
        spec,
        training=call.dropout > 0,
        recompute=call.recompute,
        compiled=compiling(),
    )


def op_seed(call: AttentionCall) -> torch.Tensor:
    """The 0-d int64 dropout seed a native custom operator takes for ``call``: drawn from PyTorch's
    generator when ``call`` has attention dropout, else zero (no draw: the generator is untouched)."""
    if call.dropout > 0:
        return torch.randint(0, 2**62, (), dtype=torch.int64)
    return torch.zeros((), dtype=torch.int64)


def _attend_native(call: AttentionCall) -> torch.Tensor:
    """The custom operator, with the per-call dropout seed of :func:`op_seed`."""
    seed = op_seed(call)
    return native_op.chunked_attention(
        call.q,
        call.k,
        call.v,
        call.table,
        call.group_scores,
        op_classes(call),
        seed,
        call.patch_size or 0,
        call.dropout,
        call.chunk_elements,
    )


class _Chunked:
    auto_devices: tuple[str, ...]

    def __init__(self, name: str, use_native: bool, auto_devices: tuple[str, ...], description: str):
        self.name, self.use_native, self.auto_devices = name, use_native, auto_devices
        self.description = description

    def __repr__(self) -> str:
        return f"<gsa attention backend {self.name!r}>"

    def why_not(self, call: AttentionCall) -> str | None:
        """The native kernels need float32/float64 CPU tensors, a built library, and recomputation."""
        if not self.use_native:
            return None
        if not call.recompute:
            return "recompute=False keeps the probabilities for autograd, which only the PyTorch path does"
        return _native.why_not(call.q)

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`attend`."""
        return attend(call, use_native=self.use_native)


NATIVE = _Chunked("native", True, ("cpu",), "chunked core with the C++ kernels (CPU, float32/float64)")
PYTORCH = _Chunked("pytorch", False, ("cpu", "cuda"), "chunked core in PyTorch operations (any device)")
