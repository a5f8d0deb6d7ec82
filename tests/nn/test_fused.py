"""The ``"fused"`` backend: local attention in one native kernel per direction, against the dense oracle."""

import pytest
import torch

from gsa.nn import GroupSelfAttention, LiftingSelfAttention, backends, native
from gsa.nn.backends import fused

pytestmark = pytest.mark.skipif(not native.available(), reason=f"no native kernels here ({native.status()})")


def _grads(layer, x, backend, w):
    params = [x, *layer.parameters()]
    out = layer(x, backend=backend)
    return out, torch.autograd.grad((out * w).sum(), params, allow_unused=True)


def _agree(layer, x, rtol, atol):
    w = torch.randn(layer(x, backend="reference").shape, dtype=x.dtype)
    o_f, g_f = _grads(layer, x, "fused", w)
    o_r, g_r = _grads(layer, x, "reference", w)
    torch.testing.assert_close(o_f, o_r, rtol=rtol, atol=atol)
    scale = max(g.abs().max().item() for g in g_r if g is not None)
    for a, b in zip(g_f, g_r):
        assert (a is None) == (b is None)
        if a is not None:  # parameters whose true gradient is zero compare at the gradients' scale
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize(
    "g,ps,size,heads",
    [
        ("p4", 3, (5, 4), 2),
        ("p4m", 3, (4, 4), 2),  # dihedral: several conjugation classes of the group term
        ("z2", 5, (6, 3), 3),
        ("p8", 1, (3, 3), 1),
        ("mz2", 3, (2, 5), 2),  # window taller than the image
        ("p4", 5, (7, 7), 9),  # batch × heads above one lane block
    ],
)
def test_group_layer_matches_the_reference_in_float64(g, ps, size, heads):
    torch.manual_seed(0)
    layer = GroupSelfAttention(g, 3, 6, num_heads=heads, patch_size=ps, attention_dropout=0.0).double()
    x = torch.randn(2, 3, layer.group.order, *size, dtype=torch.float64, requires_grad=True)
    _agree(layer, x, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("g,ps", [("p4", 3), ("p4m", 5), ("z2", 3)])
def test_lifting_layer_matches_the_reference_in_float64(g, ps):
    torch.manual_seed(1)
    layer = LiftingSelfAttention(g, 2, 6, num_heads=3, patch_size=ps, attention_dropout=0.0).double()
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    _agree(layer, x, rtol=1e-10, atol=1e-11)


def test_float32_is_close_to_the_float64_reference():
    torch.manual_seed(2)
    layer = GroupSelfAttention("p4", 4, 8, num_heads=2, patch_size=3, attention_dropout=0.0)
    x = torch.randn(5, 4, 4, 6, 6)
    ref = layer.double()(x.double(), backend="reference")
    out = layer.float()(x, backend="fused")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_operator_gradcheck():
    torch.manual_seed(3)
    Bn, X, Y, Gq, Gk, H, U, d, dv, p, ps = 3, 3, 4, 2, 2, 2, 2, 4, 3, 2, 3
    t = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    args = (t(Bn, X, Y, Gq, d), t(Bn, X, Y, Gk, d), t(Bn, X, Y, Gk, dv), t(H, ps * ps, p), t(Bn, X, Y, Gq, U, Gk))
    classes = torch.tensor([1, 0])
    f = lambda *a: fused.local_attention(*a, classes, ps)  # noqa: E731
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def _call(**kw):
    q = torch.randn(2, 4, 4, 4, 6)
    base = dict(
        q=q,
        k=q.clone(),
        v=q.clone(),
        table=torch.randn(4, 9, 2),
        group_scores=None,
        classes=None,
        patch_size=3,
        dropout=0.0,
        chunk_elements=1 << 20,
        recompute=True,
    )
    return backends.AttentionCall(**{**base, **kw})


def test_why_not_and_selection():
    assert backends.why_not("fused", _call()) is None
    assert backends.select("auto", _call()).name == "fused"
    assert backends.select("fast", _call()).name == "fused"
    assert "local attention only" in backends.why_not("fused", _call(patch_size=None))
    assert "dropout" in backends.why_not("fused", _call(dropout=0.1))
    assert backends.select("auto", _call(dropout=0.1)).name == "native"
    assert "one dtype" in backends.why_not("fused", _call(table=torch.randn(4, 9, 2, dtype=torch.float64)))
    half = _call(q=torch.randn(2, 4, 4, 4, 6, dtype=torch.bfloat16))
    assert "float32 or float64" in backends.why_not("fused", half)
    with native.disabled():
        assert "disabled" in backends.why_not("fused", _call())
        assert backends.select("auto", _call()).name == "pytorch"


def test_a_layer_trains_with_fused_and_evaluates_with_dropout_elsewhere():
    """Dropout in training goes to the chunked core; the same layer evaluates with the fused kernel."""
    torch.manual_seed(4)
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.2)
    x = torch.randn(2, 3, 4, 5, 5)
    layer.train()
    layer(x).sum().backward()  # chunked core, with masks
    layer.eval()
    torch.testing.assert_close(layer(x, backend="fused"), layer(x, backend="native"), rtol=1e-5, atol=1e-6)


def test_torch_export_keeps_the_operator():
    torch.manual_seed(5)
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.0).eval()
    x = torch.randn(1, 3, 4, 5, 5)
    ep = torch.export.export(layer, (x,))
    assert any("gsa.local_attention" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), layer(x))
