"""Backends of :func:`gsa.nn.functional.group_attention`: one registry, one selection rule.

A backend is an object with

* ``name`` (str) and a one-line ``description``;
* ``why_not(call: AttentionCall) -> str | None``: ``None`` when it can compute ``call`` here, else
  the reason it cannot (shown to the user);
* ``attend(call: AttentionCall) -> Tensor``: the attended values ``(B, X, Y, |H|, dv)``;
* ``auto_devices``: the device types on which ``backend="auto"`` may choose it (``()``: never).

Registered here: ``"reference"`` (the dense oracle, :mod:`.reference`), ``"fused"`` (local attention in
one native CPU kernel per direction, :mod:`.fused`), ``"native"`` and ``"pytorch"``
(the chunked core with and without the C++ kernels, :mod:`.chunked`), ``"flex"``
(:func:`torch.nn.attention.flex_attention`, :mod:`.flex`) and ``"triton"`` (fused Triton kernels,
forward and backward, :mod:`.triton`; needs the optional ``triton`` package). Add one with
:func:`register`.

Selection (:func:`select`), in one place:

* ``"auto"`` — the first of ``triton`` (CUDA), ``flex`` (CUDA), ``fused`` (CPU), ``native`` (CPU),
  ``pytorch`` that can run;
* ``"fast"`` — the fastest CPU path that can run: ``fused``, else the chunked core (``native``, else
  ``pytorch``);
* ``"dense"`` — another name of ``"reference"``;
* any registered name — that backend; when it cannot run, a warning (once per backend and reason)
  says why and the ``"auto"`` choice runs instead.

Each choice is logged at debug level on the ``"gsa"`` logger.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import torch

from .. import neighbourhood as _nb

__all__ = [
    "AttentionCall",
    "register",
    "get",
    "names",
    "check",
    "select",
    "why_not",
    "neighbourhood",
    "compiling",
    "BACKENDS",
]

_log = logging.getLogger("gsa")
_REGISTRY: dict = {}
_AUTO_ORDER = ["triton", "flex", "fused", "native", "pytorch"]
_POLICIES = {"auto": None, "fast": ("fused", "native", "pytorch")}
_ALIASES = {"dense": "reference"}
_warned: set = set()


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One call of the attention op: its tensors and every setting that is not a tensor.

    Shapes (heads folded into the batch ``B``; ``p`` positional, ``d`` query/key, ``dv`` value channels)::

        q             (B, X, Y, Gq, d)    scaled queries; q[..., :p] meets the positional table
        k             (B, X, Y, Gk, d)
        v             (B, X, Y, Gk, dv)
        table         (|H|, R, p)         encodings ρ_h of the neighbourhood's R offsets
        group_scores  (B, X, Y, Gq, U, Gk) or None    group term per class u
        classes       (|H|,) long in [0, U), or None  the class of each output element h
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    table: torch.Tensor
    group_scores: torch.Tensor | None
    classes: torch.Tensor | None
    patch_size: int | None
    dropout: float
    chunk_elements: int
    recompute: bool
    auto_chunks: bool = False  # chunk_elements was not given: the chunked core may size chunks by device memory

    @property
    def neighbourhood(self) -> _nb.Neighbourhood:
        """The :class:`~gsa.nn.neighbourhood.Neighbourhood` of ``patch_size``."""
        return neighbourhood(self.patch_size)

    @property
    def needs_grad(self) -> bool:
        """Whether autograd will differentiate through this call."""
        return torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (self.q, self.k, self.v, self.table, self.group_scores)
        )

    @property
    def order(self) -> int:
        """``|H|``: the number of output group elements."""
        return self.table.shape[0]


_NEIGHBOURHOODS: dict = {}


def neighbourhood(patch_size: int | None) -> _nb.Neighbourhood:
    """The (shared) :class:`~gsa.nn.neighbourhood.Neighbourhood` of ``patch_size``, validated."""
    key = (type(patch_size), patch_size)  # True and 1 are different requests (True is refused)
    nb = _NEIGHBOURHOODS.get(key)
    if nb is None:
        nb = _NEIGHBOURHOODS[key] = _nb.make(patch_size)
    return nb


def register(backend) -> None:
    """Add ``backend`` (see the module docstring for what it provides) under ``backend.name``."""
    for attr in ("name", "description", "why_not", "attend", "auto_devices"):
        if not hasattr(backend, attr):
            raise TypeError(f"a gsa attention backend needs .{attr}; {backend!r} has none")
    if backend.name in _POLICIES or backend.name in _ALIASES:
        raise ValueError(f"{backend.name!r} is a selection rule, not a backend name")
    _REGISTRY[backend.name] = backend


def names() -> tuple[str, ...]:
    """Registered backend names, then the selection rules (``auto``, ``fast``) and aliases."""
    return (*_POLICIES, *_REGISTRY, *_ALIASES)


def get(name: str):
    """The backend registered as ``name`` (aliases resolved)."""
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(names())}")
    return _REGISTRY[name]


def check(name: str) -> str:
    """``name`` if it is a backend, rule or alias; else a ``ValueError`` listing them."""
    if name not in _POLICIES:
        get(name)
    return name


def why_not(name: str, call: AttentionCall) -> str | None:
    """Why backend ``name`` cannot compute ``call`` here (``None``: it can)."""
    return get(name).why_not(call)


def _first(candidates, call: AttentionCall, device_rule: bool):
    device = call.q.device.type
    for name in candidates:
        b = _REGISTRY.get(name)
        if b is None or (device_rule and device not in b.auto_devices):
            continue
        if b.why_not(call) is None:
            return b
    return _REGISTRY["pytorch"]


def select(requested: str, call: AttentionCall):
    """The backend that computes ``call`` when ``requested`` is asked for (see the module docstring)."""
    if requested == "auto":
        chosen = _first(_AUTO_ORDER + [n for n in _REGISTRY if n not in _AUTO_ORDER], call, True)
    elif requested in _POLICIES:
        chosen = _first(_POLICIES[requested], call, False)
    else:
        chosen = get(requested)
        reason = chosen.why_not(call)
        if reason is not None:
            fallback = select("auto", call)
            _warn_once(requested, reason, fallback.name)
            chosen = fallback
    if not compiling() and _log.isEnabledFor(logging.DEBUG):
        _log.debug(
            "group_attention: backend %s (requested %s), q %s %s on %s, dropout %g",
            chosen.name,
            requested,
            tuple(call.q.shape),
            call.q.dtype,
            call.q.device,
            call.dropout,
        )
    return chosen


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing the current call."""
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - older torch
        return False


def _warn_once(requested: str, reason: str, fallback: str) -> None:
    key = (requested, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"gsa: attention backend {requested!r} cannot run here ({reason}); using {fallback!r}",
            RuntimeWarning,
            stacklevel=4,
        )


def _register_builtins() -> None:
    from . import chunked, flex, fused, reference, triton

    for b in (reference.BACKEND, fused.BACKEND, chunked.NATIVE, chunked.PYTORCH, flex.BACKEND, triton.BACKEND):
        register(b)


_register_builtins()
BACKENDS = names()
