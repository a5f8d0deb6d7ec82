"""Lifting and group self-attention: one attention op, two key/query domains.

Both layers compute, for every output group element ``h`` and query ``(a_q, i)`` with keys
``(a_k, j)`` in the neighbourhood of ``i`` (paper Eqs. 13–16; the group term's index is gsa's, the
paper's and the original code's ``h⁻¹ a_q⁻¹ a_k`` is not equivariant)::

    score = ( q·k + q_pos·ρ_h(x_j − x_i) + q_grp·E[h⁻¹ a_k a_q⁻¹ h] ) / sqrt(C_in)
    out(h, i) = Σ_{a_q} Σ_{(a_k, j)} softmax_{(a_k, j)}(score) · v(a_k, j)

The lifting layer is the case with one query/key group element and no group term; local and
global attention differ only in the :mod:`~gsa.nn.neighbourhood`.

The layers hold the parameters: the projections, the positional MLPs (tabulated as ``ρ_h`` of the
neighbourhood's offsets) and the group embedding (turned into group scores per conjugation class).
The attention itself is :func:`gsa.nn.functional.group_attention`, computed by the backend that
``backend=`` selects (:mod:`gsa.nn.backends`: ``"auto"``, ``"fast"``, ``"reference"``/``"dense"``,
``"native"``, ``"pytorch"``, ``"flex"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import groups as _groups
from . import backends as _backends
from . import neighbourhood as _nb
from .functional import group_attention
from .positional import ENCODINGS, PositionalEncoding, acted_offsets, conjugation_classes, make_encoding

__all__ = ["LiftingSelfAttention", "GroupSelfAttention", "BACKENDS"]

BACKENDS = _backends.BACKENDS


def _autocast_on(device_type: str) -> bool:
    """Whether ``torch.autocast`` is active for ``device_type`` (it casts mixed inputs itself)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def _is_int(val, low: int, odd: bool = False) -> bool:
    """Whether ``val`` is an ``int`` (not a ``bool``) ``>= low``, and odd when ``odd``."""
    ok = not isinstance(val, bool) and isinstance(val, int) and val >= low
    return ok and (val % 2 == 1 or not odd)


def check_layer_args(lifting, in_channels, out_channels, num_heads, mid, attention_dropout, *, odd=()) -> None:
    """One-line ``ValueError`` for the first bad constructor argument of an attention layer.

    Shared by the layers here and those of :mod:`gsa.scale`. Checked in order: ``in_channels``,
    ``out_channels`` and ``num_heads`` positive ints; each ``(message, value)`` of ``odd`` an odd
    int ``>= 1`` (else ``"{message}, got {value!r}"``); ``mid`` (channels per head) an int ``>= 2``
    for a lifting layer, ``>= 3`` for a group layer (which splits it three ways);
    ``attention_dropout`` in ``[0, 1)``.
    """
    for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("num_heads", num_heads)):
        if not _is_int(val, 1):
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    for message, val in odd:
        if not _is_int(val, 1, odd=True):
            raise ValueError(f"{message}, got {val!r}")
    min_mid = 2 if lifting else 3
    if not _is_int(mid, min_mid):
        raise ValueError(f"mid_channels must be an int >= {min_mid} (it defaults to out_channels // 2), got {mid!r}")
    if not 0.0 <= attention_dropout < 1.0:
        raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout}")


class AttentionHeads(nn.Module):
    """What every attention layer (here and in :mod:`gsa.scale`) has: the heads' projections.

    A head's ``mid`` channels split into row and column positional channels and, in a group layer,
    group channels (``row_dim``, ``col_dim``, ``grp_dim``); ``query``, ``key``, ``value`` map
    ``C_in → num_heads·mid``, ``out`` maps ``num_heads·mid → C_out``. Subclasses set ``lifting``.
    """

    lifting: bool = False

    def _init_heads(self, in_channels: int, out_channels: int, num_heads: int, mid: int) -> None:
        """Set the channel counts, the split of a head and the projections (arguments checked before)."""
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads, self.mid_channels = num_heads, mid
        if self.lifting:
            self.row_dim, self.col_dim, self.grp_dim = mid // 2, mid - mid // 2, 0
        else:
            self.row_dim = self.col_dim = mid // 3
            self.grp_dim = mid - 2 * (mid // 3)
        inner = num_heads * mid
        self.query = nn.Linear(in_channels, inner)
        self.key = nn.Linear(in_channels, inner)
        self.value = nn.Linear(in_channels, inner)
        self.out = nn.Linear(inner, out_channels)

    def _project(self, x: torch.Tensor):
        """``x`` → ``q, k, v`` of shape ``(B·n, X, Y, G, d)``, ``q`` scaled by ``1/√C_in``.

        Index ``b·n + head`` of the first axis is batch element ``b``'s head; in memory the tensors are
        batch-innermost, ``(X, Y, G, d, B·n)`` contiguous (the fused kernels' lane layout, so that they
        need no copy of their own), each made by one batched product and one copy."""
        xl = x.unsqueeze(2) if self.lifting else x  # (B, C, G, X, Y)
        B, C, G, X, Y = xl.shape
        flat = xl.reshape(B, C, G * X * Y)

        def proj(lin, scale=None):
            y = _linear_channels_first(lin, flat, scale)  # (B, n·d, G·X·Y)
            y = y.view(B, self.num_heads, self.mid_channels, G, X, Y).permute(4, 5, 3, 2, 0, 1).contiguous()
            return y.view(X, Y, G, self.mid_channels, B * self.num_heads).movedim(-1, 0)

        return proj(self.query, 1.0 / math.sqrt(self.in_channels)), proj(self.key), proj(self.value)

    def _finish(self, o: torch.Tensor, B: int) -> torch.Tensor:
        """The heads' outputs ``(B·n, X, Y, H, d)`` (any strides) → ``(B, C_out, H, X, Y)`` contiguous."""
        n, (X, Y, H, d) = self.num_heads, o.shape[1:]
        o = o.view(B, n, X, Y, H, d).permute(0, 1, 5, 4, 2, 3).reshape(B, n * d, H * X * Y)
        y = _linear_channels_first(self.out, o)
        return y.view(B, y.shape[1], H, X, Y)


def _linear_channels_first(lin: nn.Module, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``lin`` (a linear map ``C → C'``, times ``scale``) applied to ``x (B, C, N)`` → ``(B, C', N)``:
    one batched product for an :class:`~torch.nn.Linear`, any other module on a channels-last copy."""
    if type(lin) is not nn.Linear:
        y = lin(x.transpose(1, 2)).transpose(1, 2)
        return y if scale is None else y * scale
    w, b = lin.weight, lin.bias
    if scale is not None:
        w, b = w * scale, None if b is None else b * scale
    w = w.expand(x.shape[0], *w.shape)
    y = torch.bmm(w, x)
    return y if b is None else y.add_(b.view(1, -1, 1))  # faster than baddbmm's broadcast copy


class _GroupAttention(AttentionHeads):
    """Shared implementation; use :class:`LiftingSelfAttention` or :class:`GroupSelfAttention`."""

    def __init__(
        self,
        group,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 9,
        mid_channels: int | None = None,
        patch_size: int | None = None,
        attention_dropout: float = 0.0,
        backend: str = "auto",
        chunk_elements: int | None = None,
        recompute: bool = True,
        coordinate_init: str = "spread",
        positional: str = "rowcol",
    ):
        super().__init__()
        self.group = _groups.get(group)
        mid = out_channels // 2 if mid_channels is None else mid_channels
        check_layer_args(self.lifting, in_channels, out_channels, num_heads, mid, attention_dropout)
        self.neighbourhood = _nb.make(patch_size)
        self.backend = _backends.check(backend)
        self.patch_size = patch_size
        self.chunk_elements = chunk_elements
        self.recompute = recompute
        self._init_heads(in_channels, out_channels, num_heads, mid)
        self._set_positional(positional, make_encoding(positional, self.row_dim + self.col_dim, coordinate_init))
        if not self.lifting:
            self.group_embedding = nn.Embedding(self.group.order, self.grp_dim)
            idx = self.positional.group_index(self.group)  # (h, a_q, a_k)
            self.register_buffer("group_index", idx, persistent=False)
        self._classes = conjugation_classes(idx) if not self.lifting else None
        if not self.lifting:
            H = self.group.order
            reps = self._classes[1]
            rel = idx[reps].permute(1, 0, 2)  # (a_q, u, a_k)
            # index tables as (non-persistent) buffers: .to(device) moves them once, no copy per call
            self.register_buffer("class_index", (torch.arange(H).view(H, 1, 1) * H + rel).reshape(-1), persistent=False)
            self.register_buffer("output_classes", self._classes[0].clone(), persistent=False)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self._coords: dict = {}

    def _set_positional(self, name: str, encoding: PositionalEncoding) -> None:
        """Hold ``encoding`` as :attr:`positional`, its submodules registered on the layer itself.

        So the parameters keep the names the encoding gives them (``row_encoding.fc1.weight``, the
        state-dict keys of every ``gsa`` weight file), whatever the variant."""
        for child, module in encoding.named_children():
            if hasattr(self, child):
                raise ValueError(f"positional encoding {name!r}: submodule name {child!r} is taken by the layer")
            self.add_module(child, module)
        object.__setattr__(self, "positional", encoding)  # not a submodule: its children are ours
        self.positional_name = ENCODINGS.canonical(name)

    def extra_repr(self) -> str:
        nb = "global" if self.patch_size is None else f"local {self.patch_size}x{self.patch_size}"
        pos = "" if self.positional_name == "rowcol" else f", positional={self.positional_name}"
        return (
            f"group={self.group.name}, in={self.in_channels}, out={self.out_channels}, "
            f"heads={self.num_heads}, mid={self.mid_channels}, {nb}, backend={self.backend}{pos}"
        )

    # ------------------------------------------------------------------ input handling
    def _check_input(self, x: torch.Tensor) -> None:
        want = "(B, C, X, Y)" if self.lifting else f"(B, C, |H|={self.group.order}, X, Y)"
        rank = 4 if self.lifting else 5
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor {want}, got {type(x).__name__}")
        if x.dim() != rank:
            raise ValueError(f"{type(self).__name__} expects input of shape {want}, got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} input channels {want}, "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if not self.lifting and x.shape[2] != self.group.order:
            raise ValueError(
                f"{type(self).__name__} expects a group axis of size |H|={self.group.order} "
                f"({self.group.name}) at dim 2 {want}, got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")
        if 0 in x.shape[-2:]:
            raise ValueError(
                f"{type(self).__name__} expects an image of at least 1x1 pixels {want}, got shape {tuple(x.shape)}"
            )
        w = next(self.query.parameters()).dtype  # also for a wrapped projection
        if x.dtype != w and not _backends.compiling() and not _autocast_on(x.device.type):
            raise TypeError(
                f"{type(self).__name__} expects {w} input (the dtype of its parameters), got {x.dtype}; "
                f"convert the input (x.to({w})) or the layer (.to({x.dtype})), or run under torch.autocast"
            )

    # ------------------------------------------------------------------ positional encodings
    def window(self, X: int, Y: int) -> int | None:
        """The neighbourhood computed on an ``X×Y`` input: ``patch_size``, or ``None`` (every pixel) when
        the ``k×k`` window is wider than any offset in the image (``k > 2·max(X, Y) − 1``). Same result:
        the slots outside the image are masked anyway; it only avoids the memory of ``k²`` slots (a
        101×101 window on 28×28 images asked for tens of GB). Offsets keep the window's scale."""
        k = self.patch_size
        return None if k is not None and k > 2 * max(X, Y) - 1 else k

    def _acted_coords(self, X: int, Y: int, device) -> torch.Tensor:
        """``(|H|, R, 2)`` float64 normalised acted offsets for this neighbourhood (cached)."""
        window = self.window(X, Y)
        key = ((X, Y) if window is None else ()) + (str(device),)
        coords = self._coords.get(key)
        if coords is None:
            nb = self.neighbourhood  # offsets of the window computed, scaled like the layer's own window
            coords = acted_offsets(self.group, _backends.neighbourhood(window).offsets(X, Y), nb.scale(X, Y)).to(device)
            if not _backends.compiling():  # tracing (torch.compile, torch.export) must not mutate the module
                self._coords[key] = coords
        return coords

    def _encode(self, coords: torch.Tensor, dtype) -> torch.Tensor:
        """Acted coordinates ``(..., 2)`` → spatial encodings ``(..., row_dim + col_dim)`` (:attr:`positional`)."""
        return self.positional(coords.to(dtype))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
        """Lifting: ``(B, C_in, X, Y)`` → ``(B, C_out, |H|, X, Y)``.
        Group: ``(B, C_in, |H|, X, Y)`` → ``(B, C_out, |H|, X, Y)``."""
        self._check_input(x)
        backend = _backends.check(backend or self.backend)
        q, k, v = self._project(x)
        X, Y = x.shape[-2:]
        o = group_attention(
            q,
            k,
            v,
            self.positional_table(X, Y, q.device, q.dtype),
            group_scores=self._group_scores(q),
            classes=self._output_classes(q.device),
            patch_size=self.window(X, Y),
            dropout=self.attention_dropout.p if self.training else 0.0,
            backend=backend,
            chunk_elements=self.chunk_elements,
            recompute=self.recompute,
        )
        return self._finish(o, x.shape[0])

    def positional_table(self, X: int, Y: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """``(|H|, R, p)`` encodings ``ρ_h`` of the ``R`` offsets of :meth:`window` on an ``X×Y`` input."""
        return self._encode(self._acted_coords(X, Y, torch.device("cpu") if device is None else device), dtype)

    def _output_classes(self, device) -> torch.Tensor | None:
        """``(|H|,)`` conjugation class of each output element (``None`` when there is one class)."""
        if self.lifting or self._classes[1].numel() == 1:
            return None
        return self.output_classes.to(device)  # already there after module.to(device)

    def _group_scores(self, q: torch.Tensor) -> torch.Tensor | None:
        """``q_grp·E[idx]`` per conjugation class: ``(Bn, X, Y, Gq, d)`` → ``(Bn, X, Y, Gq, U, Gk)``."""
        if self.lifting:
            return None
        H = self.group.order
        qg = q[..., self.row_dim + self.col_dim :].contiguous()  # batch-major rows: one product over all of them
        t = qg @ self.group_embedding.weight.t()  # (..., Gq, |H|)
        flat = self.class_index.to(q.device)  # (Gq·U·Gk,) into the flattened (Gq, |H|) axis (a no-op once moved)
        U = self._classes[1].numel()
        return t.flatten(-2).index_select(-1, flat).view(*t.shape[:-2], H, U, H)


class LiftingSelfAttention(_GroupAttention):
    """Lifting self-attention (paper Eq. 13–14): ``(B, C_in, X, Y) → (B, C_out, |H|, X, Y)``.

    Args:
        group: a :class:`gsa.groups.Group` or its name (``"p4"``, ``"R8"``, ...).
        in_channels, out_channels: channel counts ``C_in`` and ``C_out``.
        num_heads: attention heads (paper: 9).
        mid_channels: channels per head (default ``out_channels // 2``, as in the original).
        patch_size: ``None`` for global attention, an odd ``k`` for a ``k×k`` neighbourhood.
        attention_dropout: dropout on the attention probabilities.
        backend: ``"auto"`` (default), ``"fast"``, ``"reference"`` (the oracle; also ``"dense"``) or any
            backend of :mod:`gsa.nn.backends` (``"native"``, ``"pytorch"``, ``"flex"``).
        coordinate_init: first-layer bias init of the positional MLPs, ``"spread"`` (default) or
            ``"zero"`` (the original code's; see :class:`gsa.nn.positional.CoordinateMLP`).
        positional: the spatial positional encoding, a name in :data:`gsa.nn.positional.ENCODINGS`:
            ``"rowcol"`` (default, the paper's row and column MLPs), ``"joint"``, ``"fourier"``,
            ``"fourier-fixed"``, ``"gevit"``. The layer holds it as ``positional``.

    Equivariance: ``layer(act_on_image(g, x)) == act_on_lifted(g, layer(x))`` for every element
    ``g`` that maps the pixel grid to itself (quarter turns and mirrors).
    """

    lifting = True


class GroupSelfAttention(_GroupAttention):
    """Group self-attention (paper Eq. 15–16): ``(B, C_in, |H|, X, Y) → (B, C_out, |H|, X, Y)``.

    Same arguments as :class:`LiftingSelfAttention`. Positional encoding per head: row and column
    MLPs (``mid // 3`` channels each) and an embedding of the relative group element
    ``h⁻¹ a_k a_q⁻¹ h`` (the remaining channels; gsa's index: the paper's ``h⁻¹ a_q⁻¹ a_k`` is not
    equivariant).

    Equivariance: ``layer(act_on_lifted(g, x)) == act_on_lifted(g, layer(x))``.
    """

    lifting = False
