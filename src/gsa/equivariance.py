"""Check equivariance (or invariance) of any module numerically.

The action used on each side is chosen from the tensor ranks:

* ``(B, C, X, Y)`` — an image: :func:`gsa.groups.act_on_image`;
* ``(B, C, |H|, X, Y)`` — a lifted map: :func:`gsa.groups.act_on_lifted`;
* ``(B, K)`` — logits: the identity (invariance).
"""

from __future__ import annotations

import copy

import torch

from . import groups as _groups

__all__ = ["check_equivariance", "exact_elements"]


def exact_elements(group) -> list[int]:
    """Elements that map the pixel grid to itself exactly: quarter turns, with or without mirror."""
    group = _groups.get(group)
    return [e for e in range(group.order) if (4 * group.split(e)[0]) % group.rotations == 0]


def _act(group, e: int, t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 5:
        return _groups.act_on_lifted(group, e, t)
    if t.dim() == 4:
        return _groups.act_on_image(group, e, t)
    if t.dim() == 2:
        return t
    raise ValueError(f"cannot act on a tensor of shape {tuple(t.shape)}: expected rank 2, 4 or 5")


@torch.no_grad()
def check_equivariance(
    module: torch.nn.Module,
    group,
    input_shape=None,
    *,
    x: torch.Tensor | None = None,
    elements=None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> dict[int, float]:
    """Relative error ``max|f(g·x) − g·f(x)| / max|g·f(x)|`` for each group element ``g``.

    Args:
        module: any module; it is copied, cast to ``dtype`` and put in eval mode (the original is
            left untouched), so trained models can be checked too.
        group: the group (name or :class:`~gsa.groups.Group`) whose action is tested.
        input_shape: shape of a random normal input, e.g. ``(2, 1, 28, 28)``; or give ``x``.
        elements: element indices to test (default: :func:`exact_elements`).
        dtype: computation dtype (float64 shows exact equivariance as round-off).

    Returns:
        ``{element: relative error}``.

    Raises:
        ValueError: when the module's output is identically zero (nothing would be checked).

    Example:
        >>> import gsa
        >>> layer = gsa.nn.LiftingSelfAttention("p4", 1, 8, num_heads=2, patch_size=3)
        >>> errs = gsa.check_equivariance(layer, "p4", (1, 1, 9, 9))
        >>> max(errs.values()) < 1e-12
        True
    """
    group = _groups.get(group)
    if x is None:
        if input_shape is None:
            raise ValueError("give input_shape or x")
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(*input_shape, generator=gen, dtype=torch.float64)
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else x.device
    m = copy.deepcopy(module).to(dtype=dtype).eval()
    x = x.to(device=device, dtype=dtype)
    y = m(x)
    if not bool(y.ne(0).any()):
        raise ValueError(
            "the module's output is identically zero for this input, so the check would be vacuous "
            "(a new GSANet starts with a zero classifier: check a trained model, its features(), "
            "or one created with head_init='whitening')"
        )
    out = {}
    for e in exact_elements(group) if elements is None else elements:
        expected = _act(group, e, y)
        got = m(_act(group, e, x))
        scale = expected.abs().max().clamp_min(torch.finfo(dtype).tiny)
        out[int(e)] = float((got - expected).abs().max() / scale)
    return out
