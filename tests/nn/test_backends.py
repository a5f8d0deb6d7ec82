"""``gsa.nn.backends``: the registry, the selection rule, its warnings and its log lines."""

import dataclasses
import logging
import warnings

import pytest
import torch

from gsa.nn import GroupSelfAttention, backends, group_attention, native
from gsa.nn.backends import AttentionCall, reference


def _call(dropout=0.0, grad=False, dtype=torch.float64):
    q = torch.randn(2, 5, 5, 4, 6, dtype=dtype, requires_grad=grad)
    k, v = torch.randn(2, 5, 5, 4, 6, dtype=dtype), torch.randn(2, 5, 5, 4, 3, dtype=dtype)
    table = torch.randn(4, 9, 4, dtype=dtype)
    gs = torch.randn(2, 5, 5, 4, 1, 4, dtype=dtype)
    return AttentionCall(q, k, v, table, gs, None, 3, dropout, 1 << 20, True)


class _Counting:
    """A toy backend: the reference, counting its calls."""

    name = "counting"
    description = "the reference, counting calls (tests)"
    auto_devices: tuple = ()

    def __init__(self):
        self.calls = 0

    def why_not(self, call):
        return None if call.dropout == 0 else "counting has no dropout"

    def attend(self, call):
        self.calls += 1
        return reference.attend(call)


@pytest.fixture
def counting():
    b = _Counting()
    backends.register(b)
    yield b
    backends._REGISTRY.pop(b.name)


def test_a_registered_backend_is_selected_by_name_in_the_op_and_the_layers(counting):
    call = _call()
    assert backends.select("counting", call) is counting
    out = group_attention(
        call.q, call.k, call.v, call.table, group_scores=call.group_scores, patch_size=3, backend="counting"
    )
    torch.testing.assert_close(out, reference.attend(call))
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, backend="counting").double()
    layer(torch.randn(1, 3, 4, 5, 5, dtype=torch.float64))
    assert counting.calls == 2
    assert "counting" in backends.names()
    assert "auto" not in [n for n in backends.names() if n in backends._REGISTRY]


def test_register_refuses_incomplete_backends_and_rule_names():
    with pytest.raises(TypeError, match="needs .attend"):
        backends.register(type("B", (), {"name": "b", "description": "", "why_not": None, "auto_devices": ()})())
    bad = _Counting()
    bad.name = "auto"
    with pytest.raises(ValueError, match="selection rule"):
        backends.register(bad)


def test_auto_and_fast_on_the_cpu():
    call = _call()
    want = "fused" if native.available() else "pytorch"
    assert backends.select("auto", call).name == want
    assert backends.select("fast", call).name == want
    assert backends.select("auto", _call(dropout=0.1)).name == want
    chunked = "native" if native.available() else "pytorch"  # global attention: the chunked core
    glob = dataclasses.replace(_call(), patch_size=None)
    assert backends.select("auto", glob).name == chunked
    assert backends.select("fast", glob).name == chunked
    assert backends.select("dense", call).name == "reference"
    with native.disabled():
        assert backends.select("auto", call).name == "pytorch"
        assert backends.select("fast", call).name == "pytorch"
    # flex is never chosen automatically on the CPU, even where it could run
    with torch.no_grad():
        assert backends.why_not("flex", call) is None
        assert backends.select("auto", call).name == want


def test_why_not_gives_reasons():
    assert backends.why_not("reference", _call()) is None
    assert backends.why_not("flex", _call(dropout=0.1)) == "FlexAttention has no attention dropout"
    assert "backward" in backends.why_not("flex", _call(grad=True))
    half = _call(dtype=torch.bfloat16)
    assert "float32 or float64" in backends.why_not("native", half)
    with native.disabled():
        assert "disabled" in backends.why_not("native", _call())


def test_a_backend_that_cannot_run_warns_once_with_its_reason_and_auto_runs(counting):
    backends._warned.clear()
    call = _call(dropout=0.2)
    with pytest.warns(RuntimeWarning, match=r"backend 'counting' cannot run here \(counting has no dropout\)"):
        chosen = backends.select("counting", call)
    assert chosen.name == backends.select("auto", call).name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends.select("counting", call)  # once per backend and reason


def test_training_with_dropout_on_flex_warns_and_uses_the_chunked_core():
    backends._warned.clear()
    layer = GroupSelfAttention("p4", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.3, backend="flex")
    layer.train()
    with pytest.warns(RuntimeWarning, match="FlexAttention has no attention dropout"):
        out = layer(torch.randn(1, 3, 4, 5, 5))
    assert out.shape == (1, 6, 4, 5, 5)


def test_each_choice_is_logged_at_debug_level(caplog):
    call = _call()
    with caplog.at_level(logging.DEBUG, logger="gsa"):
        chosen = backends.select("auto", call)
    assert any(f"backend {chosen.name} (requested auto)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("g,ps", [("p3m", 3), ("p6", None), ("p5", 3)])
def test_every_cpu_backend_agrees_for_group_orders_beyond_the_papers(g, ps):
    """|H| = 6 with U = 6 classes (odd dihedral), |H| = 6 and |H| = 5: no backend assumes an order."""
    torch.manual_seed(0)
    layer = GroupSelfAttention(g, 3, 6, num_heads=2, patch_size=ps).double().eval()
    x = torch.randn(1, 3, layer.group.order, 6, 5, dtype=torch.float64)
    names = ["reference", "pytorch", "flex"] + (["native", "fused"] if native.available() and ps else [])
    with torch.no_grad():
        dense = layer(x, backend="dense")
        for name in names:
            torch.testing.assert_close(layer(x, backend=name), dense, rtol=0, atol=1e-12, msg=name)


def test_chunks_are_sized_by_device_memory_on_cuda_unless_given(monkeypatch):
    from types import SimpleNamespace

    from gsa.nn.backends import chunked

    def call(device, auto):
        return SimpleNamespace(q=SimpleNamespace(device=torch.device(device)), chunk_elements=1 << 20, auto_chunks=auto)

    for total, want in [(80 * 2**30, 1 << 26), (8 * 2**30, 1 << 25), (2**20, 1 << 20)]:
        chunked._device_budget.cache_clear()
        props = SimpleNamespace(total_memory=total)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, props=props: props)
        assert chunked.chunk_elements(call("cuda:0", True)) == want
    assert chunked.chunk_elements(call("cuda:0", False)) == 1 << 20  # given: kept
    assert chunked.chunk_elements(call("cpu", True)) == 1 << 20  # the CPU keeps its cache-sized chunks
    chunked._device_budget.cache_clear()
