"""The fast core's hand-written backward, its dropout, the flex backend and torch.compile.

References: the dense oracle (all pairs, autograd) and :func:`gsa.nn.fastcore.chunk_differentiable`
(the same factorised math in differentiable operations, ``recompute=False``).
"""

import contextlib

import pytest
import torch

from gsa.nn import GroupSelfAttention, LiftingSelfAttention, masks


def _layer(cls, g, ps, cin=3, cout=6, heads=2, **kw):
    return cls(g, cin, cout, num_heads=heads, patch_size=ps, **kw).double()


def _grads(layer, x, w, **kw):
    x = x.detach().requires_grad_()
    out = layer(x, **kw)
    return out, torch.autograd.grad((out * w).sum(), [x, *layer.parameters()], allow_unused=True)


@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
@pytest.mark.parametrize("g", ["p4", "p4m"])
@pytest.mark.parametrize("ps", [3, None])
def test_hand_written_backward_matches_differentiable_path_and_oracle(cls, g, ps, layer_input):
    layer = _layer(cls, g, ps, chunk_elements=1)  # one query row per chunk: many chunks, partial tiles
    x = layer_input(layer)
    w = torch.randn(layer(x).shape, dtype=torch.float64)
    out_hw, g_hw = _grads(layer, x, w)  # AttentionFunction (recomputing backward)
    layer.recompute = False
    out_ad, g_ad = _grads(layer, x, w)  # chunk_differentiable + autograd
    out_d, g_d = _grads(layer, x, w, backend="dense")
    torch.testing.assert_close(out_hw, out_ad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(out_hw, out_d, rtol=1e-10, atol=1e-12)
    for a, b, c in zip(g_hw, g_ad, g_d):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "cls,g,ps", [(LiftingSelfAttention, "p4", 3), (GroupSelfAttention, "p4m", 3), (GroupSelfAttention, "p4", None)]
)
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_gradcheck_with_and_without_attention_dropout(cls, g, ps, dropout, layer_input):
    """gradcheck in float64 on tiny inputs. With dropout each call re-seeds the global generator, so
    the layer's per-call seed (and all its masks) repeat: the hand-written backward must then be the
    exact gradient of that masked function, i.e. backward regenerates the forward's masks."""
    torch.manual_seed(0)
    layer = _layer(cls, g, ps, cin=2, cout=6, heads=1, attention_dropout=dropout, chunk_elements=64)
    layer.train()
    x = layer_input(layer, B=1, X=4, Y=3).requires_grad_()

    def f(inp):
        torch.manual_seed(1234)
        return layer(inp)

    if dropout:
        torch.manual_seed(7)
        assert not torch.allclose(f(x), layer(x))  # dropout is active and seeded per call
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_dropout_mask_rate_and_determinism():
    params = masks.dropout_params(0.1, seed=3, cid=0)
    m1 = masks.keep_mask(params, 0, (1000, 1000), "cpu")
    m2 = masks.keep_mask(masks.dropout_params(0.1, seed=3, cid=0), 0, (1000, 1000), "cpu")
    assert torch.equal(m1, m2)
    assert abs(m1.float().mean().item() - 0.9) < 2e-3
    # any slice regenerates from its counters alone
    assert torch.equal(masks.keep_mask(params, 12345, (77,), "cpu"), m1.flatten()[12345:12422])
    # other seeds and other chunks give (nearly) independent masks
    other = masks.keep_mask(masks.dropout_params(0.1, seed=4, cid=0), 0, (1000, 1000), "cpu")
    chunk = masks.keep_mask(masks.dropout_params(0.1, seed=3, cid=1), 0, (1000, 1000), "cpu")
    for m in (other, chunk):
        assert abs((m1 & m).float().mean().item() - 0.81) < 3e-3
    # counters beyond 2^32 use their high word
    hi = masks.keep_mask(params, 2**32, (1000, 1000), "cpu")
    assert abs((m1 & hi).float().mean().item() - 0.81) < 3e-3
    assert masks.dropout_params(0.0, seed=3, cid=0)[3] == 0
    assert bool(masks.keep_mask(masks.dropout_params(1e-12, 3, 0), 0, (1000,), "cpu").all())


def test_generator_masks_of_the_pytorch_path():
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    m1 = masks.dropout_keep_mask((1000, 1000), 0.1, g1, "cpu")
    m2 = masks.dropout_keep_mask((1000, 1000), 0.1, g2, "cpu")
    assert torch.equal(m1, m2)
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    assert abs(m1.mean().item() - 0.9) < 2e-3
    assert bool((masks.dropout_keep_mask((1000,), 0.0, g1, "cpu") == 1).all())


@pytest.mark.parametrize("hashed", [False, True])
def test_pytorch_path_gradcheck_with_dropout(hashed, layer_input):
    """The PyTorch path (no native kernels) regenerates its masks in backward, with either mask source."""
    from gsa.nn import native

    torch.manual_seed(0)
    layer = _layer(GroupSelfAttention, "p4", 3, cin=2, cout=6, heads=1, attention_dropout=0.4, chunk_elements=64)
    layer.train()
    x = layer_input(layer, B=1, X=4, Y=3).requires_grad_()

    def f(inp):
        torch.manual_seed(1234)
        return layer(inp)

    with native.disabled(), masks.hash_masks() if hashed else contextlib.nullcontext():
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_dropout_expectation_matches_no_dropout(layer_input):
    """Inverted dropout: averaged over many seeds, the output approaches the dropout-free output."""
    torch.manual_seed(0)
    layer = _layer(GroupSelfAttention, "p4", 3, attention_dropout=0.5)
    x = layer_input(layer, B=1, X=5, Y=5)
    layer.eval()
    ref = layer(x)
    layer.train()
    with torch.no_grad():
        mean = sum(layer(x) for _ in range(200)) / 200
    err = (mean - ref).abs().max() / ref.abs().max()
    assert err < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention backend needs CUDA")
@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
@pytest.mark.parametrize("g", ["p4", "p4m"])
@pytest.mark.parametrize("ps", [3, None])
def test_flex_backend_matches_dense_on_cuda(cls, g, ps, layer_input):
    layer = cls(g, 4, 8, num_heads=2, patch_size=ps).cuda()
    x = layer_input(layer, B=2, X=9, Y=8, dtype=torch.float32).cuda()
    w = torch.randn(layer(x, backend="dense").shape, device="cuda")
    out_f, g_f = _grads(layer, x, w, backend="flex")
    out_d, g_d = _grads(layer, x, w, backend="dense")
    out_s, g_s = _grads(layer, x, w, backend="fast")
    torch.testing.assert_close(out_f, out_d, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_s, out_d, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_f, g_d):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    for a, b in zip(g_s, g_d):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def _explain_breaks(fn, *args):
    import torch._dynamo

    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


@pytest.mark.parametrize("cls,ps", [(LiftingSelfAttention, 3), (GroupSelfAttention, 3), (GroupSelfAttention, None)])
def test_torch_compile_layer_fullgraph_matches_eager(cls, ps, layer_input):
    torch.manual_seed(0)
    layer = cls("p4", 3, 6, num_heads=2, patch_size=ps)
    x = layer_input(layer, B=2, X=7, Y=6, dtype=torch.float32)
    assert _explain_breaks(layer, x) == 0
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    w = torch.randn(layer(x).shape)
    out_c, g_c = _grads(compiled, x, w)
    out_e, g_e = _grads(layer, x, w)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_c, g_e):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_torch_compile_small_model_has_no_graph_breaks():
    from gsa.models import create

    torch.manual_seed(0)
    model = create("rotmnist", group="p4", patch_size=5, channels=6, num_heads=2, head_init="whitening").eval()
    x = torch.randn(1, 1, 28, 28)
    assert _explain_breaks(model, x) == 0
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_device_seed_hashes_the_masks_on_the_device_without_host_round_trips(monkeypatch, layer_input):
    """Off the CPU the seed is a device tensor (:func:`fastcore.draw_seed`); here a CPU tensor stands in
    for it: forward and backward never read it on the host (``.item()`` raises), and its masks are the
    hashed masks of the same int seed."""
    from gsa.nn import fastcore

    assert isinstance(fastcore.draw_seed(torch.device("cpu")), int)  # the CPU keeps its int seed and masks
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.3, backend="pytorch")
    layer = layer.double().train()
    x = layer_input(layer, B=1, X=5, Y=4)

    def run(seed):
        monkeypatch.setattr(fastcore, "draw_seed", lambda device: seed)
        xg = x.clone().requires_grad_()
        out = layer(xg)
        return out, torch.autograd.grad(out.square().sum(), [xg, *layer.parameters()])

    with masks.hash_masks():
        want = run(987654321)
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: pytest.fail("a host round-trip: .item()"))
    got = run(torch.tensor(987654321, dtype=torch.int64))
    monkeypatch.setattr(torch.Tensor, "item", item)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
