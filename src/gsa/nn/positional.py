"""Relative positional encodings acted on by the group (paper §5, Eqs. 13–16), and the index of the
relative group element (gsa's: the paper's index is not equivariant, see :func:`relative_group_index`).

``ρ_h(δ) = [ρ_row((h⁻¹δ)_row), ρ_col((h⁻¹δ)_col)]`` for a relative offset ``δ = x_j − x_i``
(normalised to ``[-1, 1]`` over the patch or the image). Each of ``ρ_row`` and ``ρ_col`` is a small
MLP of one scalar, so any rotation (also 45°, 22.5°, ...) acts without interpolation.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import groups as _groups

__all__ = ["COORDINATE_INITS", "CoordinateMLP", "acted_offsets", "relative_group_index", "conjugation_classes", "Swish"]


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
        if init not in COORDINATE_INITS:
            raise ValueError(f"unknown coordinate init {init!r}; expected one of {', '.join(COORDINATE_INITS)}")
        self.init = init
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
