"""The native cores as custom operators: gradients, ``torch.compile`` with inductor, ``torch.export``.

``gsa::chunked_attention`` (backend ``"native"``) and ``gsa::local_attention`` (backend ``"fused"``)
must stay in the graph (not be replaced by the traced PyTorch path), and give the eager result.
"""

import warnings

import pytest
import torch

from gsa.nn import GroupSelfAttention, native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"no native kernels here ({native.status()})")

OPS = {"native": "gsa.chunked_attention", "fused": "gsa.local_attention"}


def _op_nodes(graph, backend="native") -> int:
    return sum(1 for n in graph.nodes if OPS[backend] in str(n.target))


@pytest.mark.parametrize("g,ps,dropout", [("p4", 3, 0.0), ("p4m", None, 0.0), ("p4", 3, 0.3)])
def test_operator_gradients_match_the_reference(g, ps, dropout):
    torch.manual_seed(0)
    layer = GroupSelfAttention(g, 3, 6, num_heads=2, patch_size=ps, attention_dropout=dropout).double()
    x = torch.randn(2, 3, layer.group.order, 5, 4, dtype=torch.float64, requires_grad=True)
    if dropout:  # the operator's own dropout: gradcheck with a fixed per-call seed

        def f(inp):
            torch.manual_seed(5)
            return layer(inp, backend="native")

        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
        return
    w = torch.randn(layer(x).shape, dtype=torch.float64)
    params = [x, *layer.parameters()]
    g_n = torch.autograd.grad((layer(x, backend="native") * w).sum(), params, allow_unused=True)
    g_r = torch.autograd.grad((layer(x, backend="reference") * w).sum(), params, allow_unused=True)
    for a, b in zip(g_n, g_r):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "fused"])
def test_torch_compile_with_inductor_keeps_the_native_operator(backend):
    """A whole GSA-Net, one graph, inductor; outputs and gradients equal the eager model's."""
    from torch._inductor.compile_fx import compile_fx

    from gsa.models import create

    torch._dynamo.reset()
    seen = []

    def inductor_recording(gm, example_inputs):
        seen.append(_op_nodes(gm.graph, backend))
        return compile_fx(gm, example_inputs)

    torch.manual_seed(0)
    model = create(
        "rotmnist", group="p4", patch_size=3, channels=6, num_heads=2, head_init="whitening", backend=backend
    )
    model.eval()  # no dropout, fixed norms: eager and compiled compute the same function
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    compiled = torch.compile(model, backend=inductor_recording, fullgraph=True)
    out_c, out_e = compiled(x), model(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-4)
    assert sum(seen) >= 2, "the native operator was not in the compiled graph"
    g_c = torch.autograd.grad(out_c.sum(), x)[0]
    g_e = torch.autograd.grad(out_e.sum(), x)[0]
    torch.testing.assert_close(g_c, g_e, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backend", ["native", "fused"])
def test_torch_export_of_a_gsanet_holds_the_native_operator(backend):
    from gsa.models import create

    torch.manual_seed(0)
    model = create(
        "rotmnist", group="p4", patch_size=3, channels=6, num_heads=2, head_init="whitening", backend=backend
    ).eval()
    x = torch.randn(2, 1, 28, 28)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ep = torch.export.export(model, (x,))
    assert not [w for w in caught if "register_buffer" in str(w.message)]  # tracing does not mutate the model
    assert _op_nodes(ep.graph, backend) >= 2
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "fused"])
@pytest.mark.parametrize("layout", ["contiguous", "batch-innermost"])
def test_opcheck_fakes_match_the_kernels_for_any_input_strides(backend, layout):
    """``torch.library.opcheck``: schema, autograd registration and fakes whose strides are the real
    outputs' (compiled graphs assert them), for batch-major inputs and the projections' own layout."""
    from gsa.nn.backends import fused, native_op

    torch.manual_seed(0)
    layer = GroupSelfAttention("p4m", 3, 6, num_heads=3, patch_size=3)
    x = torch.randn(2, 3, layer.group.order, 5, 4)
    q, k, v = (t.detach() for t in layer._project(x))  # batch × heads innermost in memory
    if layout == "contiguous":
        q, k, v = (t.contiguous() for t in (q, k, v))
    gt = layer._group_scores(q).detach()
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), layer.positional_table(5, 4).detach(), gt)
    extra = (layer._output_classes("cpu"), torch.tensor(7), 3, 0.2)
    if backend == "native":
        torch.library.opcheck(native_op.chunked_attention, (*args, *extra, 1 << 16))
    else:
        torch.library.opcheck(fused.local_attention, (*args, *extra))
