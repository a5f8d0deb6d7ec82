"""Layer behaviour: oracle agreement, shapes, sizes, gradients, bad input."""

import pytest
import torch

from gsa import groups
from gsa.nn import GroupSelfAttention, LiftingSelfAttention, native
from gsa.nn.attention import AttentionHeads, check_layer_args
from gsa.nn.positional import ENCODINGS


def _pair(layer_cls, g, ps, cin=3, cout=6, **kw):
    return layer_cls(g, cin, cout, num_heads=2, patch_size=ps, **kw).double()


@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
@pytest.mark.parametrize("g", ["z2", "p4", "p8m"])
@pytest.mark.parametrize("ps", [1, 3, 5, None])
def test_fast_path_matches_dense_oracle(cls, g, ps, layer_input):
    layer = _pair(cls, g, ps)
    x = layer_input(layer).requires_grad_()
    fast = layer(x, backend="fast")
    dense = layer(x, backend="dense")
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-12)
    # gradients too (input and parameters)
    w = torch.randn_like(fast)
    gf = torch.autograd.grad((fast * w).sum(), [x, *layer.parameters()], allow_unused=True)
    gd = torch.autograd.grad((dense * w).sum(), [x, *layer.parameters()], allow_unused=True)
    for a, b in zip(gf, gd):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("positional", ENCODINGS.names())
@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
def test_every_positional_encoding_agrees_with_the_dense_oracle(cls, positional, layer_input):
    """Each backend on the CPU against the oracle, local and global, p4m; gradients of the fast path too."""
    names = ["fast", "pytorch", "flex"] + (["native"] if native.available() else [])
    for ps in (3, None):
        layer = _pair(cls, "p4m", ps, cout=12, positional=positional)
        x = layer_input(layer).requires_grad_()
        with torch.no_grad():  # (flex has no backward pass on the CPU)
            for name in names:
                torch.testing.assert_close(layer(x, backend=name), layer(x, backend="dense"), rtol=1e-10, atol=1e-12)
        dense = layer(x, backend="dense")
        w = torch.randn_like(dense)
        params = [x, *layer.parameters()]
        gf = torch.autograd.grad((layer(x, backend="fast") * w).sum(), params, allow_unused=True)
        gd = torch.autograd.grad((dense * w).sum(), params, allow_unused=True)
        for a, b in zip(gf, gd):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("ps", [3, None])
def test_chunked_equals_unchunked(ps, layer_input):
    layer = _pair(GroupSelfAttention, "p4", ps)
    x = layer_input(layer, X=9, Y=5)
    ref = layer(x)
    layer.chunk_elements = 1  # one query row per chunk
    torch.testing.assert_close(layer(x), ref, rtol=1e-12, atol=1e-13)


def test_default_mid_channels_and_shapes():
    lift = LiftingSelfAttention("p4", 1, 20, patch_size=5)
    assert lift.num_heads == 9 and lift.mid_channels == 10
    assert lift(torch.randn(2, 1, 11, 8)).shape == (2, 20, 4, 11, 8)
    grp = GroupSelfAttention("p4m", 20, 12, patch_size=None)
    assert grp.mid_channels == 6 and (grp.row_dim, grp.col_dim, grp.grp_dim) == (2, 2, 2)
    assert grp(torch.randn(1, 20, 8, 5, 7)).shape == (1, 12, 8, 5, 7)


@pytest.mark.parametrize("ps", [5, None])
def test_one_module_serves_any_image_size(ps):
    layer = GroupSelfAttention("p4", 4, 6, num_heads=1, patch_size=ps)
    for X, Y in [(6, 6), (9, 4), (3, 11), (1, 1)]:
        out = layer(torch.randn(1, 4, 4, X, Y))
        assert out.shape == (1, 6, 4, X, Y) and torch.isfinite(out).all()


def test_gradients_are_finite_and_reach_every_parameter():
    for cls in (LiftingSelfAttention, GroupSelfAttention):
        layer = cls("p4m", 3, 6, num_heads=2, patch_size=3, attention_dropout=0.1)
        x = torch.randn(2, 3, 6, 5) if cls is LiftingSelfAttention else torch.randn(2, 3, 8, 6, 5)
        layer(x).square().mean().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_attention_dropout_only_in_training():
    layer = LiftingSelfAttention("p4", 2, 4, num_heads=1, patch_size=3, attention_dropout=0.5)
    x = torch.randn(1, 2, 6, 6)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_half_precision_runs_with_fp32_softmax():
    layer = GroupSelfAttention("p4", 4, 6, num_heads=2, patch_size=3)
    x = torch.randn(1, 4, 4, 6, 6)
    ref = layer(x)
    out = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(patch_size=4), "odd positive int"),
        (dict(patch_size=0), "odd positive int"),
        (dict(patch_size=-3), "odd positive int"),
        (dict(patch_size=2.5), "odd positive int"),
        (dict(num_heads=0), "num_heads"),
        (dict(mid_channels=2), "mid_channels"),
        (dict(attention_dropout=1.5), "attention_dropout"),
        (dict(backend="cuda-magic"), "unknown backend"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupSelfAttention("p4", 4, 6, **kwargs)


@pytest.mark.parametrize(
    "args, odd, match",
    [
        ((True, 0, 6, 1, 3, 0.0), (), r"^in_channels must be a positive int, got 0$"),
        ((True, 4, True, 1, 3, 0.0), (), r"^out_channels must be a positive int, got True$"),
        ((True, 4, 6, 1, 1, 0.0), (), r"^mid_channels must be an int >= 2 \(it defaults to .*\), got 1$"),
        ((False, 4, 6, 1, 2, 0.0), (), r"^mid_channels must be an int >= 3 "),
        ((False, 4, 6, 1, 3, -0.1), (), r"^attention_dropout must be in \[0, 1\), got -0.1$"),
        ((False, 4, 6, 1, 3, 0.0), (("k must be odd", 3), ("w must be odd", 4)), r"^w must be odd, got 4$"),
        ((False, 4, 6, 1, 2, 1.0), (("k must be odd", 2.0),), r"^k must be odd, got 2.0$"),  # before mid
        ((False, 4, 6, 0, 3, 0.0), (("k must be odd", 2),), r"^num_heads must be"),  # after the heads
    ],
)
def test_check_layer_args_reports_the_first_bad_argument(args, odd, match):
    with pytest.raises(ValueError, match=match):
        check_layer_args(*args, odd=odd)
    check_layer_args(args[0], 4, 6, 1, 3, 0.0, odd=tuple((m, 5) for m, _ in odd))  # all good: no error


@pytest.mark.parametrize("lifting, split", [(True, (2, 3, 0)), (False, (1, 1, 3))])
def test_attention_heads_split_project_and_finish(lifting, split):
    heads = type("Heads", (AttentionHeads,), {"lifting": lifting})()
    heads._init_heads(4, 6, 2, 5)
    assert (heads.row_dim, heads.col_dim, heads.grp_dim) == split
    x = torch.randn(3, 4, *(() if lifting else (2,)), 5, 6)
    q, k, v = heads._project(x)
    G = 1 if lifting else 2
    assert q.shape == k.shape == v.shape == (3 * 2, 5, 6, G, 5)
    assert all(t.movedim(0, -1).is_contiguous() for t in (q, k, v))  # batch × heads innermost in memory
    xl = (x.unsqueeze(2) if lifting else x).permute(0, 3, 4, 2, 1)  # (B, X, Y, G, C)
    torch.testing.assert_close(q[2 * 2 + 1], heads.query(xl)[2, ..., 5:] / 2)  # batch 2, head 1; 1/√C_in
    torch.testing.assert_close(k[1 * 2 + 0], heads.key(xl)[1, ..., :5])
    out = heads._finish(v, 3)  # the heads concatenated again, then ``out``
    torch.testing.assert_close(out, heads.out(heads.value(xl)).permute(0, 4, 3, 1, 2))
    assert out.is_contiguous()
    torch.testing.assert_close(heads._finish(v.contiguous(), 3), out)  # any strides of the heads' outputs
    assert heads._finish(v[:0], 0).shape == (0, 6, G, 5, 6)


def test_unknown_group_raises():
    with pytest.raises(ValueError, match="unknown group"):
        LiftingSelfAttention("so3", 1, 4)


def test_bad_inputs_raise_clear_errors():
    lift = LiftingSelfAttention("p4", 3, 6, num_heads=1, patch_size=3)
    grp = GroupSelfAttention("p4", 6, 6, num_heads=1, patch_size=3)
    with pytest.raises(ValueError, match=r"\(B, C, X, Y\)"):
        lift(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        lift(torch.randn(1, 2, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        lift(torch.zeros(1, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\|H\|=4"):
        grp(torch.randn(1, 6, 8, 5, 5))
    with pytest.raises(ValueError, match="expects 6 input channels"):
        grp(torch.randn(1, 5, 4, 5, 5))
    with pytest.raises(ValueError, match="unknown backend"):
        grp(torch.randn(1, 6, 4, 5, 5), backend="nope")


def test_state_dict_roundtrip_and_group_objects():
    a = GroupSelfAttention(groups.get("p8"), 4, 6, num_heads=2, patch_size=3)
    b = GroupSelfAttention("R8", 4, 6, num_heads=2, patch_size=3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 8, 5, 5)
    torch.testing.assert_close(a(x), b(x))
    assert "group_index" not in a.state_dict()  # derived, not saved


def test_window_wider_than_the_image_is_capped(monkeypatch):
    """A 401x401 window on a 4x4 image computes only the offsets inside the image (it asked for
    161,201 slots per pixel, tens of GB at real sizes), with the same result as the full window."""
    import gsa.nn.attention as attention

    seen = []
    real = attention.group_attention

    def spy(q, k, v, table, **kw):
        seen.append((kw["patch_size"], table.shape[1]))
        return real(q, k, v, table, **kw)

    monkeypatch.setattr(attention, "group_attention", spy)
    layer = LiftingSelfAttention("p4", 2, 4, num_heads=1, patch_size=401)
    assert layer(torch.randn(1, 2, 4, 4)).shape == (1, 4, 4, 4, 4)
    assert seen == [(None, 7 * 7)]
    assert layer.window(201, 3) == 401 and layer.window(200, 3) is None


@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
def test_capped_window_equals_the_full_window(cls, layer_input, monkeypatch):
    layer = _pair(cls, "p4m", 9)
    x = layer_input(layer, X=3, Y=4)  # 9 > 2 * 4 - 1: capped
    capped = layer(x)
    monkeypatch.setattr(type(layer), "window", lambda self, X, Y: self.patch_size)
    layer._coords.clear()
    full = layer(x, backend="dense")  # every one of the 81 slots, outside ones masked
    torch.testing.assert_close(capped, full, rtol=1e-10, atol=1e-12)


def test_mixed_dtype_input_is_a_clear_type_error():
    layer = GroupSelfAttention("p4", 4, 6, num_heads=2, patch_size=3)
    x = torch.randn(1, 4, 4, 5, 5)
    with pytest.raises(
        TypeError, match=r"expects torch.float32 input \(the dtype of its parameters\), got torch.bfloat16"
    ):
        layer(x.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts mixed inputs itself
        assert layer(x.to(torch.bfloat16)).shape == (1, 6, 4, 5, 5)


def test_empty_batch_gives_an_empty_output_and_empty_images_an_error():
    lift = LiftingSelfAttention("p4", 3, 6, num_heads=2, patch_size=3)
    grp = GroupSelfAttention("p4", 6, 6, num_heads=2, patch_size=None)
    out = grp(lift(torch.randn(0, 3, 5, 7)))
    assert out.shape == (0, 6, 4, 5, 7)
    for shape in [(1, 3, 0, 5), (2, 3, 5, 0)]:
        with pytest.raises(ValueError, match="at least 1x1 pixels"):
            lift(torch.randn(*shape))


def test_index_tables_are_non_persistent_buffers_moved_with_the_module():
    """``.to(device)`` moves the class tables once; they are not in the state dict (checkpoints unchanged)."""
    layer = GroupSelfAttention("p4m", 3, 6, num_heads=2, patch_size=3)
    buffers = dict(layer.named_buffers())
    assert {"class_index", "output_classes"} <= set(buffers)
    assert not {"class_index", "output_classes"} & set(layer.state_dict())
    layer.to("meta")
    assert layer.class_index.device.type == "meta" and layer.output_classes.device.type == "meta"


def test_projections_accept_any_module_in_place_of_the_linear_maps():
    """A wrapped (say, adapted or quantised) projection goes through the generic channels-last path."""
    torch.manual_seed(0)
    layer = GroupSelfAttention("p4", 4, 6, num_heads=2, patch_size=3)
    x = torch.randn(2, 4, 4, 5, 5)
    want = layer(x)
    for name in ("query", "key", "value", "out"):
        setattr(layer, name, torch.nn.Sequential(getattr(layer, name)))
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)
