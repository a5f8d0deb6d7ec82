"""Relative positional encodings acted on by the group (paper §5, Eqs. 13–16), their variants, and the
index of the relative group element (gsa's: the paper's index is not equivariant, see
:func:`relative_group_index`).

A layer's spatial encoding is ``ρ_h(δ) = φ(h⁻¹δ)`` for a relative offset ``δ = x_j − x_i``
(normalised to ``[-1, 1]`` over the patch or the image): a function ``φ`` of the *acted* offset.
Whatever ``φ`` is, ``ρ_{gh}(gδ) = φ(h⁻¹g⁻¹gδ) = ρ_h(δ)``, which is what makes lifting and group
self-attention equivariant; and since ``φ`` takes continuous coordinates, any rotation (also 45°,
22.5°, ...) acts without interpolation.

``φ`` is a component the layers take (``positional=`` name, :data:`ENCODINGS`):

* ``"rowcol"`` (default, the paper's): ``φ(t) = [ρ_row(t_row), ρ_col(t_col)]``, two
  :class:`CoordinateMLP` of one scalar each (:class:`RowColEncoding`);
* ``"joint"``: one MLP of the 2-D offset (:class:`JointEncoding`);
* ``"fourier"`` / ``"fourier-fixed"``: Fourier features of the offset, learnable or fixed
  frequencies, then a linear map (:class:`FourierEncoding`);
* ``"gevit"``: the paper's encoding with GE-ViT's relative group-element index (:class:`GEViTEncoding`).

Group layers also embed the relative group element of query and key, seen from the output
element; the table of which element that is (default :func:`relative_group_index`) belongs to the
component too (:meth:`PositionalEncoding.group_index`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import groups as _groups
from ..registry import Registry

__all__ = [
    "COORDINATE_INITS",
    "CoordinateMLP",
    "PositionalEncoding",
    "RowColEncoding",
    "JointEncoding",
    "FourierEncoding",
    "GEViTEncoding",
    "ENCODINGS",
    "make_encoding",
    "fourier_frequencies",
    "acted_offsets",
    "relative_group_index",
    "gevit_group_index",
    "conjugation_classes",
    "Swish",
]


class Swish(nn.Module):
    """``x · sigmoid(x)`` (SiLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x)


#: How the first layer of a :class:`CoordinateMLP` starts (see its docstring).
COORDINATE_INITS = ("spread", "zero")


class CoordinateMLP(nn.Module):
    """``Linear(1→hidden) → LayerNorm (GroupNorm, 1 group) → Swish → Linear(hidden→out)``.

    Maps ``(..., 1)`` scalar coordinates to ``(..., out_features)`` encodings.

    ``init`` sets the first layer's biases (weights are drawn by the network's initialisation):

    * ``"spread"`` (default): hidden unit ``i`` computes ``w_i · (t − c_i)`` with centres ``c_i``
      evenly spaced over the coordinate range ``[-1, 1]``, so different offsets get different
      encodings from the first step.
    * ``"zero"``: zero biases, as in the original code. Then ``w_i · t`` normalised over the hidden
      units is ``sign(t) · normalised(w)``: at initialisation every encoding depends only on the
      sign of the offset, and the network starts blind to positions inside the window.
    """

    def __init__(self, out_features: int, hidden: int = 16, init: str = "spread"):
        super().__init__()
        self.init = _check_init(init)
        self.fc1 = nn.Linear(1, hidden)
        self.norm = nn.GroupNorm(1, hidden)
        self.act = Swish()
        self.fc2 = nn.Linear(hidden, out_features)
        self.reset_bias()

    def reset_bias(self) -> None:
        """Set the first layer's biases from its current weights according to ``init``."""
        with torch.no_grad():
            if self.init == "zero":
                self.fc1.bias.zero_()
                return
            n = self.fc1.out_features
            centres = torch.linspace(-1.0, 1.0, n, dtype=self.fc1.weight.dtype) if n > 1 else torch.zeros(1)
            self.fc1.bias.copy_(-self.fc1.weight[:, 0] * centres.to(self.fc1.weight.device))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        shape = t.shape[:-1]
        h = self.fc1(t.reshape(-1, 1))
        h = self.act(self.norm(h))
        return self.fc2(h).reshape(*shape, -1)


class PositionalEncoding(nn.Module):
    """Base of the spatial encodings a layer takes: acted offsets ``(|H|, R, 2)`` → ``(|H|, R, p)``.

    :meth:`forward` maps the normalised acted offsets ``t = h⁻¹δ / scale`` (already in the layer's
    dtype) to ``φ(t)`` with ``p = out_features`` channels, row by row: ``φ`` must act on each offset
    alone (no mixing across ``|H|`` or ``R``), so that ``ρ_h(δ) = φ(h⁻¹δ)`` is equivariant by
    construction (see the module docstring). Subclasses set ``__init__(out_features, init=...)``
    (``init`` only when :attr:`takes_init`) and may override :meth:`reset_bias` and
    :meth:`group_index`; register them in :data:`ENCODINGS`.

    The layer holds the encoding's *submodules* under their own names (``row_encoding``,
    ``col_encoding``, ...: its state-dict keys), so keep every parameter inside a submodule, give
    them names no layer uses, and let :meth:`forward` not depend on ``self.training``.
    """

    #: whether the constructor takes ``init`` (a :data:`COORDINATE_INITS` choice for first-layer biases)
    takes_init: bool = False

    def __init__(self, out_features: int):
        super().__init__()
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.out_features = out_features

    def reset_bias(self) -> None:
        """Re-apply the first-layer bias init after the network has drawn its weights (default: none)."""

    @staticmethod
    def group_index(group: _groups.Group) -> torch.Tensor:
        """``(|H|, |H|, |H|)`` index ``idx[h, a_q, a_k]`` of the group embedding in group layers
        (default :func:`relative_group_index`). It must satisfy ``idx[gh, ga_q, ga_k] = idx[h, a_q, a_k]``."""
        return relative_group_index(group)


def _check_init(init: str) -> str:
    if init not in COORDINATE_INITS:
        raise ValueError(f"unknown coordinate init {init!r}; expected one of {', '.join(COORDINATE_INITS)}")
    return init


class RowColEncoding(PositionalEncoding):
    """The paper's encoding: ``φ(t) = [ρ_row(t_row), ρ_col(t_col)]``, two :class:`CoordinateMLP`.

    ``(|H|, R, 2)`` → ``(|H|, R, p)``, ``p // 2`` row channels then ``p − p // 2`` column channels.
    Equivariant by construction: ``φ`` sees only the acted offset ``h⁻¹δ``. Parameters per layer:
    ``2·(16 + 16 + 32) + 17·p`` (hidden 16).
    """

    takes_init = True

    def __init__(self, out_features: int, hidden: int = 16, init: str = "spread"):
        super().__init__(out_features)
        self.row_encoding = CoordinateMLP(out_features // 2, hidden, init=init)
        self.col_encoding = CoordinateMLP(out_features - out_features // 2, hidden, init=init)

    def reset_bias(self) -> None:
        """:meth:`CoordinateMLP.reset_bias` of both MLPs."""
        self.row_encoding.reset_bias()
        self.col_encoding.reset_bias()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` acted offsets → ``(..., p)``."""
        return torch.cat([self.row_encoding(t[..., 0:1]), self.col_encoding(t[..., 1:2])], dim=-1)


class JointEncoding(PositionalEncoding):
    """One MLP of the 2-D offset: ``Linear(2→hidden) → LayerNorm → Swish → Linear(hidden→p)``.

    ``(|H|, R, 2)`` → ``(|H|, R, p)``. Unlike ``"rowcol"``, whose score is a sum of a function of the
    row and one of the column, its hidden units see both coordinates, so a head can prefer e.g. one
    diagonal. Equivariant by construction: ``φ`` sees only the acted offset ``h⁻¹δ``. Parameters per
    layer: ``5·hidden + (hidden + 1)·p`` (``80 + 17·p`` for hidden 16).

    ``init`` sets the first layer's biases: ``"spread"``: unit ``i`` is zero on the line at signed
    distance ``s_i`` (evenly spaced in ``[-1, 1]``) along its weight vector, ``w_i·t − s_i·|w_i|``, the
    2-D form of :class:`CoordinateMLP`'s spread; ``"zero"``: zero biases.
    """

    takes_init = True

    def __init__(self, out_features: int, hidden: int = 16, init: str = "spread"):
        super().__init__(out_features)
        self.init = _check_init(init)
        self.position_mlp = nn.Sequential(
            nn.Linear(2, hidden), nn.GroupNorm(1, hidden), Swish(), nn.Linear(hidden, out_features)
        )
        self.reset_bias()

    def reset_bias(self) -> None:
        """Set the first layer's biases from its current weights according to ``init``."""
        fc1 = self.position_mlp[0]
        with torch.no_grad():
            if self.init == "zero":
                fc1.bias.zero_()
                return
            n = fc1.out_features
            s = torch.linspace(-1.0, 1.0, n, dtype=fc1.weight.dtype) if n > 1 else torch.zeros(1)
            fc1.bias.copy_(-s.to(fc1.weight.device) * fc1.weight.norm(dim=1))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` acted offsets → ``(..., p)``."""
        shape = t.shape[:-1]
        return self.position_mlp(t.reshape(-1, 2)).reshape(*shape, -1)


def fourier_frequencies(count: int, low: float = 0.25, high: float = 1.0) -> torch.Tensor:
    """``(count, 2)`` float64 frequency vectors (cycles per unit of normalised offset): radii
    geometrically spaced in ``[low, high]``, directions by the golden angle (spread over every orientation).

    The default top, 1 cycle per unit, is the Nyquist rate of a 5×5 window (offsets 0.5 apart):
    higher frequencies alias on the grid, and then rotations that are not multiples of 90° (which
    need the image interpolated) break equivariance far beyond the layers' stated tolerance
    (measured: 0.05–0.09 relative error with frequencies up to 4, 0.02–0.03 up to 1, p8 and p6m)."""
    j = torch.arange(count, dtype=torch.float64)
    radius = low * (high / low) ** (j / max(count - 1, 1))
    angle = j * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)


class _FourierFeatures(nn.Module):
    """``(N, 2)`` → ``(N, 2·count)``: ``[cos(2π B t), sin(2π B t)]`` for frequencies ``B`` ``(count, 2)``."""

    def __init__(self, count: int, learnable: bool):
        super().__init__()
        b = fourier_frequencies(count).to(torch.float32)
        if learnable:
            self.frequencies = nn.Parameter(b)
        else:  # deterministic: rebuilt, not saved
            self.register_buffer("frequencies", b, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * (t @ self.frequencies.to(t.dtype).t())
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class FourierEncoding(PositionalEncoding):
    """Fourier features of the 2-D offset, then a linear map: ``W·[cos 2πBt, sin 2πBt] + b``.

    ``(|H|, R, 2)`` → ``(|H|, R, p)``. ``count`` frequency vectors ``B`` (:func:`fourier_frequencies`,
    0.25 to 1 cycle per unit of normalised offset), learnable (``"fourier"``) or fixed
    (``"fourier-fixed"``). Equivariant by construction: the features are of the acted offset ``h⁻¹δ``
    (not rotated frequencies: each output element evaluates the same ``φ`` at its own offsets).
    Parameters per layer: ``(2·count + 1)·p``, plus ``2·count`` learnable frequencies.
    There are no first-layer biases: ``coordinate_init`` does not apply.
    """

    def __init__(self, out_features: int, count: int = 8, learnable: bool = True):
        super().__init__(out_features)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        self.fourier_features = _FourierFeatures(count, learnable)
        self.fourier_linear = nn.Linear(2 * count, out_features)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` acted offsets → ``(..., p)``."""
        shape = t.shape[:-1]
        return self.fourier_linear(self.fourier_features(t.reshape(-1, 2))).reshape(*shape, -1)


class _FixedFourierEncoding(FourierEncoding):
    """:class:`FourierEncoding` with fixed frequencies (``"fourier-fixed"``)."""

    def __init__(self, out_features: int, count: int = 8):
        super().__init__(out_features, count, learnable=False)


class GEViTEncoding(RowColEncoding):
    """The paper's row/column encoding with GE-ViT's relative group-element index (Xu et al. 2023).

    GE-ViT ("E(2)-Equivariant Vision Transformer", UAI 2023) keeps GSA-Net's spatial construction:
    rotate the normalised window offsets by each group element, then encode them with the same
    row and column MLPs. That *is* ``"rowcol"`` (both evaluate ``φ`` at the acted offset; GE-ViT
    rotates by ``h`` where we use ``h⁻¹``, which only relabels the output axis), so in a lifting
    layer this variant computes exactly what ``"rowcol"`` computes.

    What GE-ViT changes ("the positional encoding operator", their code's
    ``construct_relative_positions`` for rotation groups) is the *group* part of the encoding in
    group layers: the paper's ``h⁻¹(a_q⁻¹ a_k)`` and the original code's table are not invariant
    under ``(h, a_q, a_k) → (gh, ga_q, ga_k)``, so its group layers are not equivariant. GE-ViT's
    table is ``2a_q − a_k − h`` (rotations by steps, mod ``n``), which is invariant. Written with
    the group law it is :func:`gevit_group_index` ``= h⁻¹ a_q a_k⁻¹ a_q``, also invariant for
    roto-reflections. ``gsa``'s default fixes the same defect differently: ``h⁻¹ a_k a_q⁻¹ h``
    (:func:`relative_group_index`), which for rotations is ``a_k − a_q`` and does not depend on
    ``h``; GE-ViT's depends on ``(a_q − a_k)`` and ``(a_q − h)`` only through their sum, so every
    output element has its own table (``|H|`` classes instead of one: ``|H|``× the group-score
    work in p4). Same parameters as ``"rowcol"``.
    """

    @staticmethod
    def group_index(group: _groups.Group) -> torch.Tensor:
        """:func:`gevit_group_index`."""
        return gevit_group_index(group)


#: The spatial encodings by name (``positional=`` of the layers, :class:`gsa.models.GSANetConfig`).
#: Add your own with ``ENCODINGS.register("name", cls)``.
ENCODINGS: Registry[type] = Registry(
    "positional encoding",
    {
        "rowcol": RowColEncoding,
        "joint": JointEncoding,
        "fourier": FourierEncoding,
        "fourier-fixed": _FixedFourierEncoding,
        "gevit": GEViTEncoding,
    },
    aliases={"paper": "rowcol", "mlp2d": "joint"},
)


def make_encoding(name: str, out_features: int, init: str = "spread") -> PositionalEncoding:
    """The encoding registered as ``name`` with ``out_features`` channels (``init`` where it applies).

    Unknown names raise a one-line ``ValueError`` listing the choices.
    """
    cls = ENCODINGS.get(name)
    _check_init(init)
    enc = cls(out_features, init=init) if getattr(cls, "takes_init", False) else cls(out_features)
    if not isinstance(enc, PositionalEncoding):
        raise TypeError(f"positional encoding {name!r} built a {type(enc).__name__}, not a PositionalEncoding")
    return enc


def acted_offsets(group: _groups.Group, offsets: torch.Tensor, scale: float) -> torch.Tensor:
    """``(|H|, R, 2)`` float64 coordinates ``h⁻¹ δ / scale`` for each element ``h`` and offset ``δ``."""
    off = offsets.to(torch.float64)
    out = [group.act_on_vectors(group.inverse(h), off) for h in range(group.order)]
    return torch.stack(out) / scale


def relative_group_index(group: _groups.Group) -> torch.Tensor:
    """``(|H|, |H|, |H|)`` long table ``idx[h, a_q, a_k] = h⁻¹ a_k a_q⁻¹ h``.

    The relative element between the query's group element ``a_q`` and the key's ``a_k``, seen from
    the output element ``h``. It is invariant under ``(h, a_q, a_k) → (g h, g a_q, g a_k)``, which is
    what makes group self-attention exactly equivariant (for abelian groups it equals
    ``a_q⁻¹ a_k`` and does not depend on ``h``; for roto-reflections it does). The paper (§5.2, before
    Eq. 15) and the original code use ``h⁻¹ a_q⁻¹ a_k``, which that change turns into
    ``h⁻¹ g⁻¹ a_q⁻¹ a_k``.
    """
    c, inv = group.cayley, group.inverses
    H = group.order
    h = torch.arange(H).view(H, 1, 1)
    aq = torch.arange(H).view(1, H, 1)
    ak = torch.arange(H).view(1, 1, H)
    rel = c[ak, inv[aq]]  # a_k a_q⁻¹
    return c[c[inv[h], rel], h.expand(H, H, H)]


def gevit_group_index(group: _groups.Group) -> torch.Tensor:
    """``(|H|, |H|, |H|)`` long table ``idx[h, a_q, a_k] = h⁻¹ a_q a_k⁻¹ a_q`` (GE-ViT's index).

    Invariant under ``(h, a_q, a_k) → (g h, g a_q, g a_k)``; for rotation groups (``n`` steps) it
    is ``(2 a_q − a_k − h) mod n``, the table of GE-ViT's code (see :class:`GEViTEncoding`).
    """
    c, inv = group.cayley, group.inverses
    H = group.order
    h = torch.arange(H).view(H, 1, 1)
    aq = torch.arange(H).view(1, H, 1)
    ak = torch.arange(H).view(1, 1, H)
    t = c[c[aq, inv[ak]], aq.expand(1, H, H)]  # a_q a_k⁻¹ a_q
    return c[inv[h].expand(H, H, H), t.expand(H, H, H)]


def conjugation_classes(group_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the output elements ``h`` whose relative-element tables ``idx[h]`` coincide.

    Returns ``(u_of_h (|H|,), reps (U,))``: the class of each ``h`` and one representative per class.
    """
    H = group_index.shape[0]
    rows = group_index.reshape(H, -1)
    reps: list[int] = []
    u_of_h = []
    for h in range(H):
        for u, rep in enumerate(reps):
            if torch.equal(rows[h], rows[rep]):
                u_of_h.append(u)
                break
        else:
            u_of_h.append(len(reps))
            reps.append(h)
    return torch.tensor(u_of_h, dtype=torch.long), torch.tensor(reps, dtype=torch.long)
