"""The attention op of lifting and group self-attention, as one function.

:func:`group_attention` takes projected queries, keys and values, the positional-encoding table and
the group scores, and returns the attended values; the layers in :mod:`gsa.nn.attention` hold only
the parameters (projections, encodings, group embedding) and call it. Which implementation computes
it is chosen by :func:`gsa.nn.backends.select` (see :mod:`gsa.nn.backends`).
"""

from __future__ import annotations

import torch

from . import backends as _backends

__all__ = ["group_attention"]

_DEFAULT_CHUNK_ELEMENTS = 1 << 20  # ~4 MB float32 per chunk tensor: cache-friendly, small peak


def group_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    *,
    group_scores: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
    patch_size: int | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
    chunk_elements: int | None = None,
    recompute: bool = True,
) -> torch.Tensor:
    """Attend every query ``(i, a_q)`` to the keys ``(j, a_k)`` in the neighbourhood of ``i``, for every
    output group element ``h`` (paper Eqs. 13–16, the group term indexed by gsa's
    :func:`~gsa.nn.positional.relative_group_index`; heads folded into the batch)::

        score = q·k + q[:p]·table[h, x_j − x_i] + group_scores[a_q, classes[h], a_k]
        out[i, h] = Σ_{a_q} Σ_{(j, a_k)} softmax_{(j, a_k)}(score) · v[j, a_k]

    Args:
        q: ``(B, X, Y, Gq, d)`` queries, already scaled (the layers use ``1/√C_in``); the first ``p``
            channels meet the positional table.
        k: ``(B, X, Y, Gk, d)`` keys.
        v: ``(B, X, Y, Gk, dv)`` values.
        table: ``(|H|, R, p)`` encodings ``ρ_h`` of the neighbourhood's offsets
            (:meth:`gsa.nn.neighbourhood.Neighbourhood.offsets`: the ``k²`` window offsets in row-major
            order, or all ``(2X−1)(2Y−1)`` offsets for global attention).
        group_scores: ``(B, X, Y, Gq, U, Gk)`` group term per class ``u``, or ``None`` (lifting).
        classes: ``(|H|,)`` long, the class ``u`` of each output element (``None``: one class, ``U = 1``).
        patch_size: ``None`` for global attention, an odd ``k`` for the ``k×k`` window.
        dropout: dropout probability on the attention probabilities (pass 0 outside training).
        backend: ``"auto"``, ``"fast"``, or a registered name (:func:`gsa.nn.backends.names`).
        chunk_elements: score elements per chunk of the chunked backends (default ``2²⁰``; on CUDA the
            PyTorch path then sizes chunks by the device's memory,
            :func:`gsa.nn.backends.chunked.chunk_elements`). Dropout masks follow this chunk plan.
        recompute: chunked backends recompute probabilities in backward instead of storing them.

    Returns:
        ``(B, X, Y, |H|, dv)``.
    """
    call = _call(q, k, v, table, group_scores, classes, patch_size, dropout, chunk_elements, recompute)
    if q.shape[0] == 0:  # an empty batch gives an empty result, like torch's layers (no backend handles it)
        return _empty_result(call)
    return _backends.select(_backends.check(backend), call).attend(call)


def _empty_result(call) -> torch.Tensor:
    """``(0, X, Y, |H|, dv)`` zeros, attached to the inputs' graph (their gradients are zero)."""
    q, k, v, table = call.q, call.k, call.v, call.table
    anchor = q.sum() + k.sum() + v.sum() + table.sum()
    return v.new_zeros(0, q.shape[1], q.shape[2], call.order, v.shape[-1]) + anchor * 0


def _call(q, k, v, table, group_scores, classes, patch_size, dropout, chunk_elements, recompute):
    """Validated :class:`~gsa.nn.backends.AttentionCall`."""
    if q.dim() != 5 or k.dim() != 5 or v.dim() != 5:
        raise ValueError(
            f"q, k, v must be (B, X, Y, G, channels), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[:4] != v.shape[:4] or q.shape[:3] != k.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: batch, pixels and "
            "q/k channels must agree, k and v must share the key group axis"
        )
    nb = _backends.neighbourhood(patch_size)
    X, Y = q.shape[1], q.shape[2]
    R = (2 * X - 1) * (2 * Y - 1) if patch_size is None else patch_size**2
    if table.dim() != 3 or table.shape[1] != R or table.shape[-1] > q.shape[-1]:
        raise ValueError(
            f"table must be (|H|, R={R}, p) for {nb!r} on {X}x{Y} with p <= {q.shape[-1]}, got {tuple(table.shape)}"
        )
    if group_scores is not None:
        want = (*q.shape[:4], k.shape[3])
        got = (*group_scores.shape[:4], group_scores.shape[-1])
        if group_scores.dim() != 6 or got != want:
            raise ValueError(
                f"group_scores must be (B, X, Y, Gq, U, Gk) = {want[:4]} + (U, {want[4]}), "
                f"got {tuple(group_scores.shape)}"
            )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return _backends.AttentionCall(
        q,
        k,
        v,
        table,
        group_scores,
        classes,
        patch_size,
        float(dropout),
        chunk_elements or _DEFAULT_CHUNK_ELEMENTS,
        recompute,
        auto_chunks=not chunk_elements,
    )
