"""Export a model to an ONNX, ``torch.export`` (pt2) or TorchScript file: :func:`export`, :func:`load`.

Every format is written with the attention layers switched to the ``"reference"`` backend (the dense
pure-PyTorch oracle of :mod:`gsa.nn.backends`; the layers' ``backend`` is restored afterwards), in eval
mode, with a dynamic batch dimension. The other backends do not export everywhere:

* ``"native"`` and ``"fused"`` are the custom operators ``gsa::chunked_attention`` and
  ``gsa::local_attention`` running C++ kernels: ONNX has no such operators, and a pt2 file holding
  them needs gsa's compiled kernels wherever it is loaded;
* ``"pytorch"`` (the chunked core) plans its chunks from the batch size, so pt2 and TorchScript files
  would fix the batch, and the ONNX exporter has no translation of its ``as_strided_scatter``;
* ``"flex"`` needs CUDA.

The reference backend computes all pixel pairs: memory ``O((X·Y)²)`` per image in the exported model.
The exported model takes the same input as the PyTorch model (normalised images ``(B, C, H, W)``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["FORMATS", "EXPORT_BACKEND", "export", "load", "max_abs_difference", "attention_backend"]

#: Formats :func:`export` writes, with their usual file suffix.
FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}
#: The attention backend the layers use while they are exported.
EXPORT_BACKEND = "reference"
_NEEDS = {"onnx": ("onnx", "onnxscript")}


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of: {', '.join(FORMATS)}")
    missing = [m for m in _NEEDS.get(format, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"exporting to {format} needs the Python package(s) {', '.join(missing)}, which are not "
            f"installed (pip install {' '.join(missing)})"
        )


@contextlib.contextmanager
def attention_backend(model: nn.Module, backend: str):
    """Set ``backend`` on every layer of ``model`` that has a string ``backend`` attribute (the attention
    layers of :mod:`gsa.nn`); restore the previous values on exit."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "backend", None), str)]
    before = [m.backend for m in layers]
    try:
        for m in layers:
            m.backend = backend
        yield model
    finally:
        for m, b in zip(layers, before):
            m.backend = b


def export(
    model: nn.Module, path: str | Path, *, format: str, example: torch.Tensor, backend: str = EXPORT_BACKEND
) -> Path:
    """Write ``model`` (in eval mode, attention on ``backend``) to ``path`` in ``format``; return the path.

    Args:
        model: e.g. a :class:`~gsa.models.GSANet`; its training mode and layer backends are restored after.
        path: the file to write (parent folders are created).
        format: ``"onnx"`` (``torch.onnx.export(dynamo=True)``, one file, input ``"x"``, output
            ``"logits"``), ``"pt2"`` (:func:`torch.export.export` + :func:`torch.export.save`) or
            ``"torchscript"`` (:func:`torch.jit.trace`).
        example: an input ``(B, C, H, W)`` with ``B >= 2`` (a batch of 1 would be fixed by the tracers);
            the batch dimension of the file is dynamic, the other dimensions are those of ``example``.
        backend: the attention backend while tracing (see the module docstring).
    Raises:
        ConfigError: an unknown format, a missing exporter package or a batch below 2.
    """
    _check_format(format)
    if example.dim() < 1 or example.shape[0] < 2:
        raise ConfigError(f"the example input for export needs a batch of at least 2, got shape {tuple(example.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with attention_backend(model, backend), torch.no_grad():
            model(example)  # fill the layers' caches with real tensors: the ONNX exporter would leave fake ones
            _WRITERS[format](model, path, example)
    finally:
        model.train(was_training)
    return path


def _batch_dim():
    return {"x": {0: torch.export.Dim("batch", min=1)}}


def _write_pt2(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=_batch_dim()), path)


def _write_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        dynamic_shapes=_batch_dim(),
        input_names=["x"],
        output_names=["logits"],
        external_data=False,
        verbose=False,
    )


def _write_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():  # deprecation of torch.jit and tracer notes on shape checks: not for users
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (example,), check_trace=False).save(str(path))


_WRITERS = {"onnx": _write_onnx, "pt2": _write_pt2, "torchscript": _write_torchscript}


def load(path: str | Path, *, format: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``x (B, C, H, W) -> logits`` running the exported file at ``path`` (CPU): onnxruntime
    for ``"onnx"`` (needs the ``onnxruntime`` package), :func:`torch.export.load` for ``"pt2"``,
    :func:`torch.jit.load` for ``"torchscript"``."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of: {', '.join(FORMATS)}")
    if format == "pt2":
        return torch.export.load(str(path)).module()
    if format == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError("running an ONNX file needs the Python package onnxruntime (pip install onnxruntime)")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def max_abs_difference(model: nn.Module, path: str | Path, *, format: str, x: torch.Tensor) -> float:
    """``max |exported(x) − model(x)|`` for the file at ``path`` (model in eval mode, on CPU)."""
    run = load(path, format=format)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float((run(x).float() - model(x).float()).abs().max())
    finally:
        model.train(was_training)
