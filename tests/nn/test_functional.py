"""``gsa.nn.functional.group_attention``: every backend against the reference, on raw tensors.

The op is called directly (no layer): random queries, keys, values, tables and group scores, so the
backends are compared on inputs no layer would produce (unequal channel counts, several classes).
"""

import pytest
import torch

from gsa.nn import GroupSelfAttention, backends, group_attention, native
from gsa.nn.functional import group_attention as functional_group_attention


def _inputs(Gq, Gk, H, U, ps, X=5, Y=4, B=3, d=7, dv=5, p=4, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(0)
    R = (2 * X - 1) * (2 * Y - 1) if ps is None else ps * ps

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)

    q, k, v = rnd(B, X, Y, Gq, d), rnd(B, X, Y, Gk, d), rnd(B, X, Y, Gk, dv)
    table = rnd(H, R, p)
    gs = None if Gq == 1 else rnd(B, X, Y, Gq, U, Gk)
    classes = None if U == 1 else torch.arange(H) % U
    return q, k, v, table, gs, classes


SHAPES = [  # (Gq, Gk, H, U): lifting, abelian group, group with several classes
    (1, 1, 4, 1),
    (4, 4, 4, 1),
    (8, 8, 8, 4),
]


def _run(backend, inputs, ps, **kw):
    q, k, v, table, gs, classes = inputs
    return group_attention(q, k, v, table, group_scores=gs, classes=classes, patch_size=ps, backend=backend, **kw)


def test_public_names():
    assert group_attention is functional_group_attention
    assert {"reference", "pytorch", "native", "flex"} <= set(backends.names())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ps", [3, None])
@pytest.mark.parametrize("backend", ["pytorch", "native", "flex"])
def test_backends_match_reference_forward(shape, ps, backend):
    inputs = _inputs(*shape, ps)
    if backend == "native" and not native.available():
        pytest.skip(native.status())
    ref = _run("reference", inputs, ps)
    assert ref.shape == (3, 5, 4, shape[2], 5)
    with torch.no_grad():  # flex runs on the CPU without gradients
        out = _run(backend, inputs, ps, chunk_elements=500)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ps", [3, None])
@pytest.mark.parametrize("backend", ["pytorch", "native"])
def test_chunked_backends_match_reference_gradients(shape, ps, backend):
    if backend == "native" and not native.available():
        pytest.skip(native.status())
    inputs = _inputs(*shape, ps, grad=True)
    tensors = [t for t in inputs[:5] if t is not None]
    w = torch.randn(3, 5, 4, shape[2], 5, dtype=torch.float64)
    g_ref = torch.autograd.grad((_run("reference", inputs, ps) * w).sum(), tensors)
    g_out = torch.autograd.grad((_run(backend, inputs, ps, chunk_elements=500) * w).sum(), tensors)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_pytorch_backend_gradcheck_with_several_classes():
    inputs = _inputs(8, 8, 8, 4, 3, X=3, Y=3, B=1, d=4, dv=2, p=2, grad=True)
    tensors = [t for t in inputs[:5] if t is not None]

    def f(q, k, v, table, gs):
        return group_attention(
            q, k, v, table, group_scores=gs, classes=inputs[5], patch_size=3, backend="pytorch", chunk_elements=64
        )

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_group_scores_by_class_equal_the_direct_group_term():
    """The layer's per-class group scores, expanded by class, are ``q_grp·E[h⁻¹ a_k a_q⁻¹ h]`` (the
    reference receives the per-class form, so this checks the class tables independently)."""
    torch.manual_seed(0)
    layer = GroupSelfAttention("p4m", 3, 9, num_heads=1).double()
    q = torch.randn(2, 3, 3, 8, layer.mid_channels, dtype=torch.float64)
    per_class = layer._group_scores(q)  # (B, X, Y, Gq, U, Gk)
    classes = layer._output_classes("cpu")
    assert per_class.shape[4] == 4 and classes is not None
    full = per_class.index_select(4, classes)  # (B, X, Y, Gq, H, Gk)
    E = layer.group_embedding.weight[layer.group_index]  # (H, Gq, Gk, g)
    direct = torch.einsum("bxyqc,hqkc->bxyqhk", q[..., layer.row_dim + layer.col_dim :], E)
    torch.testing.assert_close(full, direct, rtol=1e-13, atol=1e-13)


def test_dropout_is_applied_by_every_backend_that_has_it():
    inputs = _inputs(4, 4, 4, 1, 3)
    ref = _run("reference", inputs, 3)
    for backend in ("reference", "pytorch", "native"):
        torch.manual_seed(0)
        out = _run(backend, inputs, 3, dropout=0.5)
        assert out.shape == ref.shape and not torch.allclose(out, ref)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(q=torch.zeros(3, 5, 4, 7)), "q, k, v must be"),
        (dict(v=torch.zeros(3, 5, 4, 2, 5, dtype=torch.float64)), "must share the key group axis"),
        (dict(table=torch.zeros(4, 10, 4, dtype=torch.float64)), r"table must be \(\|H\|, R=9, p\)"),
        (dict(table=torch.zeros(4, 9, 8, dtype=torch.float64)), "p <= 7"),
        (dict(group_scores=torch.zeros(3, 5, 4, 4, 1, 3, dtype=torch.float64)), "group_scores must be"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(patch_size=4), "odd positive int"),
        (dict(patch_size=True), "odd positive int"),
        (dict(backend="warp-drive"), "unknown backend 'warp-drive'"),
    ],
)
def test_bad_arguments_get_one_line_errors(change, match):
    q, k, v, table, gs, _ = _inputs(4, 4, 4, 1, 3)
    args = dict(q=q, k=k, v=v, table=table, group_scores=gs, patch_size=3, dropout=0.0, backend="auto")
    args.update(change)
    with pytest.raises(ValueError, match=match) as err:
        group_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("table"), **args)
    assert "\n" not in str(err.value)
