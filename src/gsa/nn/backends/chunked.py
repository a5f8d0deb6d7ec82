"""The chunked core (:mod:`gsa.nn.fastcore`) as two backends: ``"native"`` and ``"pytorch"``.

Both compute the factorised two-level softmax chunk by chunk with a recomputing backward; ``"native"``
runs the per-pixel steps in the C++ kernels of :mod:`gsa.nn.native` (CPU, float32/float64), ``"pytorch"``
writes them with PyTorch operations (any device and dtype; the path ``torch.compile`` traces).
"""

from __future__ import annotations

import torch

from .. import fastcore as _fc
from .. import native as _native
from . import AttentionCall, compiling

__all__ = ["NATIVE", "PYTORCH", "attend"]


def attend(call: AttentionCall, *, use_native: bool) -> torch.Tensor:
    """``(B, X, Y, |H|, dv)`` by the chunked core."""
    q, k, v = call.q, call.k, call.v
    B, X, Y, Gq, _ = q.shape
    Gk, H, p = k.shape[3], call.order, call.table.shape[-1]
    classes = call.classes
    if classes is not None and call.group_scores is not None and call.group_scores.shape[4] == 1:
        classes = None  # one class: the core broadcasts it
    if classes is not None:
        classes = classes.to(q.device)
    spec = _fc.Spec(call.neighbourhood, X, Y, B, Gq, Gk, H, p, classes, call.chunk_elements, call.dropout,
                    native=use_native)
    return _fc.attend(q, spec.pad(k), spec.pad(v), call.table, call.group_scores, spec,
                      training=call.dropout > 0, recompute=call.recompute, compiled=compiling())


class _Chunked:
    auto_devices: tuple[str, ...]

    def __init__(self, name: str, use_native: bool, auto_devices: tuple[str, ...], description: str):
        self.name, self.use_native, self.auto_devices = name, use_native, auto_devices
        self.description = description

    def __repr__(self) -> str:
        return f"<gsa attention backend {self.name!r}>"

    def why_not(self, call: AttentionCall) -> str | None:
        """The native kernels need float32/float64 CPU tensors, a built library and no tracing."""
        return _native.why_not(call.q) if self.use_native else None

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`attend`."""
        return attend(call, use_native=self.use_native)


NATIVE = _Chunked("native", True, ("cpu",), "chunked core with the C++ kernels (CPU, float32/float64)")
PYTORCH = _Chunked("pytorch", False, ("cpu", "cuda"), "chunked core in PyTorch operations (any device)")
