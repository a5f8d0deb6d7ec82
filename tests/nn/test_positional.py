"""Positional encodings: the registry of variants, their parameters and state, GE-ViT's group index."""

import pytest
import torch

from gsa import groups
from gsa.nn import GroupSelfAttention, LiftingSelfAttention
from gsa.nn.positional import (
    ENCODINGS,
    FourierEncoding,
    JointEncoding,
    PositionalEncoding,
    RowColEncoding,
    gevit_group_index,
    make_encoding,
    relative_group_index,
)

VARIANTS = ENCODINGS.names()  # at collection: before a docs page registers its own


def test_the_variants_and_their_names():
    assert VARIANTS == ["rowcol", "joint", "fourier", "fourier-fixed", "gevit"]
    assert ENCODINGS.canonical("Row-Col") == ENCODINGS.canonical("paper") == "rowcol"
    assert isinstance(LiftingSelfAttention("p4", 1, 4, num_heads=1).positional, RowColEncoding)  # the default


@pytest.mark.parametrize(
    "build",
    [
        lambda: LiftingSelfAttention("p4", 1, 4, num_heads=1, positional="sinusoid"),
        lambda: GroupSelfAttention("p4", 3, 6, num_heads=1, positional="sinusoid"),
        lambda: make_encoding("sinusoid", 4),
    ],
)
def test_an_unknown_name_is_one_line_listing_the_choices(build):
    with pytest.raises(ValueError) as info:
        build()
    text = str(info.value)
    assert (
        text.startswith("unknown positional encoding 'sinusoid'; expected one of: rowcol, joint") and "\n" not in text
    )


def test_the_default_keeps_its_state_dict_keys():
    """Weight files of every earlier version name the MLPs ``row_encoding`` / ``col_encoding`` on the layer."""
    layer = GroupSelfAttention("p4", 3, 6, num_heads=1, patch_size=3)
    mlp = ["fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight", "fc2.bias"]
    keys = [k for k in layer.state_dict() if k.startswith(("row_", "col_", "positional"))]
    assert keys == [f"row_encoding.{k}" for k in mlp] + [f"col_encoding.{k}" for k in mlp]
    assert layer.row_encoding is layer.positional.row_encoding  # the encoding's own modules, not copies


@pytest.mark.parametrize("cls", [LiftingSelfAttention, GroupSelfAttention])
def test_each_variant_has_its_stated_parameter_count(cls):
    """The counts in the encodings' docstrings, for the ``p`` spatial channels of a layer."""
    for name, stated in [
        ("rowcol", lambda p: 128 + 17 * p),
        ("joint", lambda p: 80 + 17 * p),
        ("fourier", lambda p: 17 * p + 16),
        ("fourier-fixed", lambda p: 17 * p),
        ("gevit", lambda p: 128 + 17 * p),
    ]:
        layer = cls("p4", 3, 12, num_heads=2, positional=name)
        p = layer.row_dim + layer.col_dim
        assert sum(t.numel() for t in layer.positional.parameters()) == stated(p), name
        base = cls("p4", 3, 12, num_heads=2, positional="rowcol")
        others = sum(t.numel() for t in base.parameters()) - sum(t.numel() for t in base.positional.parameters())
        assert sum(t.numel() for t in layer.parameters()) == others + stated(p), name  # all registered once


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_tabulates_every_element_and_offset_and_learns(name):
    layer = GroupSelfAttention("p4m", 3, 18, num_heads=1, patch_size=3, positional=name).double()
    table = layer.positional_table(5, 5, dtype=torch.float64)
    assert table.shape == (8, 9, 6)  # (|H|, R = 3·3, p = 2·(mid // 3)), mid = 18 // 2
    assert torch.isfinite(table).all() and table[0].std(dim=0).min() > 0  # offsets are told apart
    table.square().sum().backward()
    for p in layer.positional.parameters():
        assert p.grad is not None and p.grad.abs().max() > 0


def test_fixed_fourier_frequencies_are_not_parameters_nor_saved():
    learnable, fixed = FourierEncoding(6), make_encoding("fourier-fixed", 6)
    torch.testing.assert_close(fixed.fourier_features.frequencies, learnable.fourier_features.frequencies)
    assert "fourier_features.frequencies" in learnable.state_dict()
    assert "fourier_features.frequencies" not in fixed.state_dict()
    assert not any(p.data_ptr() == fixed.fourier_features.frequencies.data_ptr() for p in fixed.parameters())


def test_joint_spread_init_puts_each_unit_on_its_own_line():
    torch.manual_seed(0)
    enc = JointEncoding(4, hidden=5)
    fc1 = enc.position_mlp[0]
    w = fc1.weight.detach()
    foot = torch.linspace(-1, 1, 5).view(-1, 1) * w / w.norm(dim=1, keepdim=True)  # s_i · unit(w_i)
    zero_at_foot = (foot * w).sum(1) + fc1.bias.detach()
    torch.testing.assert_close(zero_at_foot, torch.zeros(5), atol=1e-6, rtol=0)
    assert JointEncoding(4, init="zero").position_mlp[0].bias.abs().max() == 0


def test_gevit_lifting_layer_is_the_rowcol_layer():
    """GE-ViT keeps the paper's rotate-then-encode spatial part: same weights, same lifting output."""
    torch.manual_seed(0)
    a = LiftingSelfAttention("p4m", 2, 6, num_heads=2, patch_size=3, positional="rowcol").double()
    b = LiftingSelfAttention("p4m", 2, 6, num_heads=2, patch_size=3, positional="gevit").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("n", [2, 3, 4, 6, 8])
def test_gevit_index_is_gevits_table_for_rotations(n):
    """``2 a_q − a_k − h (mod n)``: the table GE-ViT's code builds for rotation groups."""
    r = torch.arange(n)
    expected = (2 * r.view(1, n, 1) - r.view(1, 1, n) - r.view(n, 1, 1)) % n
    assert torch.equal(gevit_group_index(groups.get(f"p{n}")), expected)


@pytest.mark.parametrize("index", [relative_group_index, gevit_group_index])
def test_group_indices_are_invariant(index):
    for name in [*groups.names(), "p3", "p5m", "p6m"]:
        G = groups.get(name)
        idx = index(G)
        c = G.cayley
        for g in range(G.order):  # idx[g h, g a_q, g a_k] == idx[h, a_q, a_k]
            assert torch.equal(idx[c[g]][:, c[g]][:, :, c[g]], idx), (name, g)


def test_gevit_gives_every_output_element_its_own_group_table():
    """Unlike the default (one class for abelian groups), so its group layers do |H|× the group-score work."""
    default = GroupSelfAttention("p4", 3, 6, num_heads=1, positional="rowcol")
    gevit = GroupSelfAttention("p4", 3, 6, num_heads=1, positional="gevit")
    assert default._classes[1].numel() == 1 and gevit._classes[1].numel() == 4
    assert torch.equal(gevit.group_index, gevit_group_index(groups.get("p4")))


class _Radial(PositionalEncoding):
    """A user's encoding: only the distance (rotation invariant, so it cannot tell elements apart)."""

    def __init__(self, out_features):
        super().__init__(out_features)
        self.radial = torch.nn.Linear(1, out_features)

    def forward(self, t):
        return self.radial(t.norm(dim=-1, keepdim=True))


def test_a_registered_encoding_is_used_by_the_layers():
    ENCODINGS.register("radial-test", _Radial)
    try:
        layer = GroupSelfAttention("p4", 3, 6, num_heads=1, patch_size=3, positional="radial-test")
        assert isinstance(layer.positional, _Radial) and "radial.weight" in layer.state_dict()
        assert "positional=radial-test" in repr(layer)
        table = layer.positional_table(4, 4)
        torch.testing.assert_close(table[1], table[0])  # the same for every rotation: a radial encoding
    finally:
        del ENCODINGS.items["radial-test"]


def test_an_encoding_whose_module_names_clash_with_the_layer_is_refused():
    class _Clash(_Radial):
        def __init__(self, out_features):
            PositionalEncoding.__init__(self, out_features)
            self.query = torch.nn.Linear(1, out_features)

    ENCODINGS.register("clash-test", _Clash)
    try:
        with pytest.raises(ValueError, match="submodule name 'query' is taken by the layer"):
            LiftingSelfAttention("p4", 1, 4, num_heads=1, positional="clash-test")
    finally:
        del ENCODINGS.items["clash-test"]
