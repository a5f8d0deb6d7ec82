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


@pytest.mark.parametrize("batch", [4, 5, 8])  # batch × heads 24 (16 + 8 lanes), 30 (padded to 32), 48
def test_float32_whole_and_half_lane_blocks_match_the_reference(batch):
    torch.manual_seed(3)
    layer = GroupSelfAttention("p4", 4, 12, num_heads=6, patch_size=3, attention_dropout=0.0)
    x = torch.randn(batch, 4, 4, 5, 6)
    ref = layer.double()(x.double(), backend="reference")
    out = layer.float()(x, backend="fused")
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_lanes_are_padded_to_half_blocks():
    assert [native._padded(n, torch.float32) for n in (1, 8, 9, 16, 24, 72, 73)] == [8, 8, 16, 16, 24, 72, 80]
    assert [native._padded(n, torch.float64) for n in (1, 4, 5, 8, 12, 18)] == [4, 4, 8, 8, 12, 20]


def test_operator_gradcheck():
    torch.manual_seed(3)
    Bn, X, Y, Gq, Gk, H, U, d, dv, p, ps = 3, 3, 4, 2, 2, 2, 2, 4, 3, 2, 3
    t = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    args = (t(Bn, X, Y, Gq, d), t(Bn, X, Y, Gk, d), t(Bn, X, Y, Gk, dv), t(H, ps * ps, p), t(Bn, X, Y, Gq, U, Gk))
    classes = torch.tensor([1, 0])
    seed = torch.zeros((), dtype=torch.int64)
    f = lambda *a: fused.local_attention(*a, classes, seed, ps, 0.0)  # noqa: E731
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
    assert backends.select("auto", _call(dropout=0.1)).name == "fused"
    assert "one dtype" in backends.why_not("fused", _call(table=torch.randn(4, 9, 2, dtype=torch.float64)))
    half = _call(q=torch.randn(2, 4, 4, 4, 6, dtype=torch.bfloat16))
    assert "float32 or float64" in backends.why_not("fused", half)
    with native.disabled():
        assert "disabled" in backends.why_not("fused", _call())
        assert backends.select("auto", _call()).name == "pytorch"


def test_torch_export_keeps_the_operator():
    torch.manual_seed(5)
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.0).eval()
    x = torch.randn(1, 3, 4, 5, 5)
    ep = torch.export.export(layer, (x,))
    assert any("gsa.local_attention" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), layer(x))


def _windowed_reference(q, k, v, table, gt, classes, ps, keep):
    """Dense per-window attention in PyTorch: probabilities ``(B, N, Gq, H, R, Gk)`` times ``keep``
    (the scaled masks, or 1), summed over ``a_q``, applied to the zero-padded value windows."""
    import torch.nn.functional as F

    B, X, Y, Gq, _ = q.shape
    Gk, H, r, R = k.shape[3], table.shape[0], ps // 2, ps * ps

    def windows(t):  # (B, X, Y, G, c) → (B, X, Y, R, G, c), zero outside the image
        w = F.pad(t, (0, 0, 0, 0, r, r, r, r)).unfold(1, ps, 1).unfold(2, ps, 1)
        return w.permute(0, 1, 2, 5, 6, 3, 4).reshape(B, X, Y, R, Gk, -1)

    d = torch.arange(-r, r + 1)
    inside = lambda n: ((torch.arange(n)[:, None] + d) >= 0) & ((torch.arange(n)[:, None] + d) < n)  # noqa: E731
    valid = (inside(X)[:, None, :, None] & inside(Y)[None, :, None, :]).reshape(X, Y, R)
    s = torch.einsum("bxyqc,bxyrkc->bxyqrk", q, windows(k))[:, :, :, :, None]  # (B, X, Y, Gq, 1, R, Gk)
    s = s + torch.einsum("bxyqc,hrc->bxyqhr", q[..., : table.shape[-1]], table)[..., None]
    if gt is not None:
        g = gt if classes is None else gt.index_select(4, classes)
        s = s + g.expand(B, X, Y, Gq, H, Gk)[:, :, :, :, :, None, :]
    s = s.masked_fill(~valid[None, :, :, None, None, :, None], float("-inf"))
    probs = torch.softmax(s.flatten(-2), -1).view(s.shape) * keep
    return torch.einsum("bxyqhrk,bxyrkc->bxyhc", probs, windows(v))


@pytest.mark.parametrize("g_classes", [None, [1, 0, 1]])
def test_dropout_masks_are_the_counter_hash_of_the_documented_layout(g_classes):
    from gsa.nn import masks

    torch.manual_seed(6)
    B, X, Y, Gq, Gk, H, d, dv, p, ps, drop = 3, 4, 5, 3, 2, 3, 4, 3, 2, 3, 0.3
    U = 1 if g_classes is None else 2
    t = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    q, k, v, table, gt = (
        t(B, X, Y, Gq, d),
        t(B, X, Y, Gk, d),
        t(B, X, Y, Gk, dv),
        t(H, ps * ps, p),
        t(B, X, Y, Gq, U, Gk),
    )
    classes = None if g_classes is None else torch.tensor(g_classes)
    seed = torch.tensor(123456789, dtype=torch.int64)
    params = masks.dropout_params(drop, int(seed), 0)
    keep = masks.keep_mask(params, 0, (X, Y, Gq, H, ps * ps, Gk, B), "cpu").to(torch.float64) / (1 - drop)
    keep = keep.permute(6, 0, 1, 2, 3, 4, 5)  # (B, X, Y, Gq, H, R, Gk)
    assert 0.5 < keep.bool().double().mean().item() < 0.9
    inputs = (q, k, v, table, gt)
    out = fused.local_attention(*inputs, classes, seed, ps, drop)
    ref = _windowed_reference(*inputs, classes, ps, keep)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_dropout_gradcheck_and_fresh_masks_per_call():
    torch.manual_seed(7)
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.3).double()
    x = torch.randn(2, 3, 4, 4, 5, dtype=torch.float64, requires_grad=True)

    def f(inp):
        torch.manual_seed(5)  # the per-call seed comes from PyTorch's generator
        return layer(inp, backend="fused")

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert not torch.equal(layer(x, backend="fused"), layer(x, backend="fused"))  # a new seed per call
    layer.eval()  # no dropout in evaluation
    torch.testing.assert_close(layer(x, backend="fused"), layer(x, backend="reference"), rtol=1e-10, atol=1e-12)


def test_gradients_are_bit_identical_for_any_thread_count():
    """The kernels sum every gradient in a fixed order (the table's per job, then over jobs), so their
    results do not depend on which thread ran which part. (A whole layer's parameter gradients also go
    through BLAS products, which may split long sums by thread count: not the kernel's to promise.)"""
    torch.manual_seed(8)
    layer = GroupSelfAttention("p4m", 4, 8, num_heads=3, patch_size=3)
    x = torch.randn(7, 4, 8, 9, 6)
    q, k, v = (t.detach().requires_grad_() for t in layer._project(x))
    table = layer.positional_table(9, 6).detach().requires_grad_()
    gt = layer._group_scores(q).detach().requires_grad_()
    inputs = (q, k, v, table, gt)
    seed, classes = torch.tensor(123), layer._output_classes("cpu")
    before = torch.get_num_threads()
    grads = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = fused.local_attention(q, k, v, table, gt, classes, seed, 3, 0.2)
            grads.append(torch.autograd.grad(out.square().sum(), inputs))
    finally:
        torch.set_num_threads(before)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.equal(a, b)
