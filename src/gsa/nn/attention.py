"""Lifting and group self-attention: one attention core, two key/query domains.

Both layers compute, for every output group element ``h`` and query ``(a_q, i)`` with keys
``(a_k, j)`` in the neighbourhood of ``i`` (paper Eqs. 13–16)::

    score = ( q·k + q_pos·ρ_h(x_j − x_i) + q_grp·E[h⁻¹ a_k a_q⁻¹ h] ) / sqrt(C_in)
    out(h, i) = Σ_{a_q} Σ_{(a_k, j)} softmax_{(a_k, j)}(score) · v(a_k, j)

The lifting layer is the case with one query/key group element and no group term; local and
global attention differ only in the :mod:`~gsa.nn.neighbourhood`.

Backends (``backend=`` argument):

* ``"dense"`` — the oracle: every query/key pair with positional encodings evaluated pair by pair
  from coordinates; memory ``O(N²)``. Used to test the others.
* ``"fast"`` — tabulated encodings, content score shared by all ``h``, window slots by shifted views
  (no ``unfold`` copies), probabilities summed over ``a_q`` before the value contraction, and
  query rows processed in chunks (recomputed in backward) so memory stays bounded.
* ``"flex"`` — :mod:`gsa.nn.flex`: one ``torch.nn.attention.flex_attention`` call (positional and
  group scores as a ``score_mod``, the window as a block mask); for CUDA. It has no attention
  dropout, so while dropout is active the layer uses ``"fast"`` instead.
* ``"auto"`` — ``"flex"`` on CUDA when no dropout is active, else ``"fast"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import groups as _groups
from . import fastcore as _fc
from . import flex as _flex
from . import neighbourhood as _nb
from .positional import CoordinateMLP, acted_offsets, relative_group_index

__all__ = ["LiftingSelfAttention", "GroupSelfAttention", "BACKENDS"]

BACKENDS = ("auto", "fast", "dense", "flex")
_DEFAULT_CHUNK_ELEMENTS = 1 << 20  # ~4 MB float32 per chunk tensor: cache-friendly, small peak


class _GroupAttention(nn.Module):
    """Shared implementation; use :class:`LiftingSelfAttention` or :class:`GroupSelfAttention`."""

    lifting: bool = False

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
    ):
        super().__init__()
        self.group = _groups.get(group)
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("num_heads", num_heads)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        mid = out_channels // 2 if mid_channels is None else mid_channels
        min_mid = 2 if self.lifting else 3
        if isinstance(mid, bool) or not isinstance(mid, int) or mid < min_mid:
            raise ValueError(
                f"mid_channels must be an int >= {min_mid} (it defaults to out_channels // 2), got {mid!r}"
            )
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout}")
        self.neighbourhood = _nb.make(patch_size)
        self.backend = _check_backend(backend)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads, self.mid_channels, self.patch_size = num_heads, mid, patch_size
        self.chunk_elements = chunk_elements or _DEFAULT_CHUNK_ELEMENTS
        self.recompute = recompute

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
        self.row_encoding = CoordinateMLP(self.row_dim, init=coordinate_init)
        self.col_encoding = CoordinateMLP(self.col_dim, init=coordinate_init)
        if not self.lifting:
            self.group_embedding = nn.Embedding(self.group.order, self.grp_dim)
            self.register_buffer("group_index", relative_group_index(self.group), persistent=False)
        self._classes = _fc.conjugation_classes(relative_group_index(self.group)) if not self.lifting else None
        if not self.lifting:
            idx = relative_group_index(self.group)  # (h, a_q, a_k)
            H = self.group.order
            reps = self._classes[1]
            rel = idx[reps].permute(1, 0, 2)  # (a_q, u, a_k)
            self._class_index = (torch.arange(H).view(H, 1, 1) * H + rel).reshape(-1)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self._coords: dict = {}

    def extra_repr(self) -> str:
        nb = "global" if self.patch_size is None else f"local {self.patch_size}x{self.patch_size}"
        return (
            f"group={self.group.name}, in={self.in_channels}, out={self.out_channels}, "
            f"heads={self.num_heads}, mid={self.mid_channels}, {nb}, backend={self.backend}"
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

    def _project(self, x: torch.Tensor):
        """``x`` → channels-last ``q, k, v`` of shape ``(B, n, X, Y, G, d)``."""
        xl = x.unsqueeze(2) if self.lifting else x  # (B, C, G, X, Y)
        xl = xl.permute(0, 3, 4, 2, 1)  # (B, X, Y, G, C)
        B, X, Y, G, _ = xl.shape
        n, d = self.num_heads, self.mid_channels

        def proj(lin):
            return lin(xl).view(B, X, Y, G, n, d).permute(0, 4, 1, 2, 3, 5)

        return proj(self.query), proj(self.key), proj(self.value)

    def _finish(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, X, Y, H, d)`` → ``(B, C_out, H, X, Y)``."""
        B, n, X, Y, H, d = o.shape
        o = o.permute(0, 2, 3, 4, 1, 5).reshape(B, X, Y, H, n * d)
        return self.out(o).permute(0, 4, 3, 1, 2)

    # ------------------------------------------------------------------ positional encodings
    def _acted_coords(self, X: int, Y: int, device) -> torch.Tensor:
        """``(|H|, R, 2)`` float64 normalised acted offsets for this neighbourhood (cached)."""
        key = (X, Y) if self.patch_size is None else ()
        key = key + (str(device),)
        if key not in self._coords:
            nb = self.neighbourhood
            self._coords[key] = acted_offsets(self.group, nb.offsets(X, Y), nb.scale(X, Y)).to(device)
        return self._coords[key]

    def _encode(self, coords: torch.Tensor, dtype) -> torch.Tensor:
        """Acted coordinates ``(..., 2)`` → spatial encodings ``(..., row_dim + col_dim)``."""
        c = coords.to(dtype)
        return torch.cat([self.row_encoding(c[..., 0:1]), self.col_encoding(c[..., 1:2])], dim=-1)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
        """Lifting: ``(B, C_in, X, Y)`` → ``(B, C_out, |H|, X, Y)``.
        Group: ``(B, C_in, |H|, X, Y)`` → ``(B, C_out, |H|, X, Y)``."""
        self._check_input(x)
        backend = _check_backend(backend or self.backend)
        q, k, v = self._project(x)
        q = q * (1.0 / math.sqrt(self.in_channels))
        backend = self._resolve_backend(backend, q)
        if backend == "dense":
            o = self._attend_dense(q, k, v)
        elif backend == "flex":
            o = self._attend_flex(q, k, v)
        else:
            o = self._attend_fast(q, k, v)
        return self._finish(o, x)

    def _flatten_heads(self, q, k, v):
        """``(B, n, X, Y, G, c)`` → ``(B·n, X, Y, G, c)`` each, plus the encoding table ``(H, R, p)``."""
        X, Y = q.shape[2], q.shape[3]
        q, k, v = (t.reshape(-1, *t.shape[2:]) for t in (q, k, v))
        table = self._encode(self._acted_coords(X, Y, q.device), q.dtype)
        return q, k, v, table

    def _attend_fast(self, q, k, v):
        """Chunked fast core (see :mod:`gsa.nn.fastcore`): ``(B, n, X, Y, G, d)`` → ``(B, n, X, Y, H, dv)``."""
        B, n, X, Y, Gq, d = q.shape
        Gk, H, dv = k.shape[4], self.group.order, v.shape[-1]
        Bn = B * n
        q, k, v, table = self._flatten_heads(q, k, v)
        p = table.shape[-1]
        gt = self._group_scores(q)  # (Bn, X, Y, Gq, U, Gk) or None
        u_of_h = None
        if not self.lifting and self._classes[1].numel() > 1:
            u_of_h = self._classes[0].to(q.device)
        drop = self.attention_dropout.p if self.training else 0.0
        spec = _fc.Spec(self.neighbourhood, X, Y, Bn, Gq, Gk, H, p, u_of_h, self.chunk_elements, drop)
        o = _fc.attend(q, spec.pad(k), spec.pad(v), table, gt, spec, training=self.training,
                       recompute=self.recompute, compiled=_compiling())
        return o.view(B, n, X, Y, H, dv)

    def _resolve_backend(self, backend: str, q: torch.Tensor) -> str:
        dropout_active = self.training and self.attention_dropout.p > 0
        if backend == "auto":
            return "flex" if (_flex.available(q.device) and not dropout_active) else "fast"
        if backend == "flex" and dropout_active:
            return "fast"  # FlexAttention has no attention dropout
        return backend

    def _attend_flex(self, q, k, v):
        B, n, X, Y, Gq, d = q.shape
        Gk, H, dv = k.shape[4], self.group.order, v.shape[-1]
        Bn = B * n
        q, k, v, table = self._flatten_heads(q, k, v)
        p = table.shape[-1]
        nb = self.neighbourhood
        local = self.patch_size is not None
        if local:
            P = (q[..., :p] @ table.reshape(-1, p).t()).unflatten(-1, (H, -1))  # (Bn, X, Y, Gq, H, k²)
        else:
            P = nb.plan(X, Y, 0, X, Gq, Gk, H).positional(q[..., :p], table).reshape(Bn, X, Y, Gq, H, X * Y)
        gt = self._group_scores(q)
        if gt is not None:
            u_of_h = self._classes[0].to(q.device)
            gt = gt.index_select(4, u_of_h)  # (Bn, X, Y, Gq, H, Gk)
        o = _flex.attend_flex(q, k, v, P, gt, local=local, r=nb.r if local else 0, X=X, Y=Y, H=H,
                              compiled=q.is_cuda)
        return o.reshape(B, n, X, Y, H, dv)

    def _group_scores(self, q: torch.Tensor) -> torch.Tensor | None:
        """``q_grp·E[idx]`` per conjugation class: ``(Bn, X, Y, Gq, d)`` → ``(Bn, X, Y, Gq, U, Gk)``."""
        if self.lifting:
            return None
        H = self.group.order
        t = q[..., self.row_dim + self.col_dim :] @ self.group_embedding.weight.t()  # (..., Gq, |H|)
        flat = self._class_index.to(q.device)  # (Gq·U·Gk,) into the flattened (Gq, |H|) axis
        U = self._classes[1].numel()
        return t.flatten(-2).index_select(-1, flat).view(*t.shape[:-2], H, U, H)

    def _attend_dense(self, q, k, v):
        """Oracle: all pairs, encodings evaluated per pair from coordinates."""
        B, n, X, Y, Gq, d = q.shape
        Gk, H, N = k.shape[4], self.group.order, X * Y
        nb = self.neighbourhood
        rows = torch.arange(X, device=q.device).repeat_interleave(Y)
        cols = torch.arange(Y, device=q.device).repeat(X)
        delta = torch.stack([rows[None, :] - rows[:, None], cols[None, :] - cols[:, None]], -1)  # (N, N, 2)
        coords = torch.stack(
            [self.group.act_on_vectors(self.group.inverse(h), delta.cpu()) for h in range(H)]
        ) / nb.scale(X, Y)
        rho = self._encode(coords.to(q.device), q.dtype)  # (H, N, N, p)
        p = rho.shape[-1]
        qf, kf, vf = q.reshape(B, n, N, Gq, d), k.reshape(B, n, N, Gk, d), v.reshape(B, n, N, Gk, -1)
        scores = torch.einsum("bniqc,bnjkc->bniqjk", qf, kf)[:, :, None].expand(B, n, H, N, Gq, N, Gk)
        scores = scores + torch.einsum("bniqc,hijc->bnhiqj", qf[..., :p], rho)[..., None]
        if not self.lifting:
            E = self.group_embedding.weight[self.group_index]  # (H, Gq, Gk, g)
            scores = scores + torch.einsum("bniqc,hqkc->bnhiqk", qf[..., p:], E)[:, :, :, :, :, None, :]
        pm = nb.pair_mask(X, Y, q.device)
        if pm is not None:
            scores = scores.masked_fill(~pm[:, None, :, None], float("-inf"))
        probs = _softmax(scores.flatten(-2)).view(scores.shape)
        probs = self.attention_dropout(probs)
        o = torch.einsum("bnhiqjk,bnjkc->bnihc", probs, vf)
        return o.reshape(B, n, X, Y, H, -1)


def _softmax(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; half precision is computed in float32."""
    if s.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(s.float(), dim=-1).to(s.dtype)
    return torch.softmax(s, dim=-1)


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - older torch
        return False


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


class LiftingSelfAttention(_GroupAttention):
    """Lifting self-attention (paper Eq. 13–14): ``(B, C_in, X, Y) → (B, C_out, |H|, X, Y)``.

    Args:
        group: a :class:`gsa.groups.Group` or its name (``"p4"``, ``"R8"``, ...).
        in_channels, out_channels: channel counts ``C_in`` and ``C_out``.
        num_heads: attention heads (paper: 9).
        mid_channels: channels per head (default ``out_channels // 2``, as in the original).
        patch_size: ``None`` for global attention, an odd ``k`` for a ``k×k`` neighbourhood.
        attention_dropout: dropout on the attention probabilities.
        backend: ``"auto"``, ``"fast"`` or ``"dense"`` (the oracle).
        coordinate_init: first-layer bias init of the positional MLPs, ``"spread"`` (default) or
            ``"zero"`` (the original code's; see :class:`gsa.nn.positional.CoordinateMLP`).

    Equivariance: ``layer(act_on_image(g, x)) == act_on_lifted(g, layer(x))`` for every element
    ``g`` that maps the pixel grid to itself (quarter turns and mirrors).
    """

    lifting = True


class GroupSelfAttention(_GroupAttention):
    """Group self-attention (paper Eq. 15–16): ``(B, C_in, |H|, X, Y) → (B, C_out, |H|, X, Y)``.

    Same arguments as :class:`LiftingSelfAttention`. Positional encoding per head: row and column
    MLPs (``mid // 3`` channels each) and an embedding of the relative group element
    ``h⁻¹ a_k a_q⁻¹ h`` (the remaining channels).

    Equivariance: ``layer(act_on_lifted(g, x)) == act_on_lifted(g, layer(x))``.
    """

    lifting = False
