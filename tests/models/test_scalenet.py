"""gsa.models.scalenet: the scale-equivariant GSA-Net, its preset, and its scale-invariant read-out."""

import pytest
import torch

import gsa
from gsa import scale
from gsa.models import ScaleGSANet, create


def test_the_preset_builds_a_scale_net_and_a_z2_twin_of_equal_size():
    net = create("scalemnist")
    assert isinstance(net, ScaleGSANet) and net.group is scale.get("scale2x3")
    assert net.config.readout == "max" and net.config.patch_size == 5
    twin = create("scalemnist", group="scale2x1")  # one scale: translations only, the same weights
    assert twin.num_parameters() == net.num_parameters()
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert net.min_input_size() == 2
    narrow = create("scalemnist", num_heads=4, head_channels=3)  # every layer's heads 3 channels wide
    assert {m.mid_channels for m in narrow.modules() if hasattr(m, "mid_channels")} == {3}
    # the paper's presets keep p4 when no group is given
    assert create("rotmnist", channels=6, num_heads=1).group is gsa.groups.get("p4")
    assert isinstance(create("rotmnist", group="scale2x2", channels=6, num_heads=1), ScaleGSANet)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(readout="median"), "unknown readout 'median'"),
        (dict(head_init="ones"), "unknown head_init"),
        (dict(patch_size=None), "odd int patch_size"),
        (dict(group="scale1x3"), "unknown scale group"),
        (dict(group="p4"), "the scalemnist preset is a scale network: group must be a scale group .*, got 'p4'"),
        (dict(positional="joint"), "the scale layers have the row/column positional encoding only, got 'joint'"),
        (dict(head_channels=2), "head_channels must be None .* or an int >= 3"),
    ],
)
def test_bad_configs_raise_one_line(overrides, match):
    with pytest.raises(ValueError, match=match):
        create("scalemnist", **{"patch_size": overrides.pop("patch_size", 5), **overrides})


def _lifted_bump(S: int, C: int = 6, size: int = 29) -> torch.Tensor:
    """``(1, C, S, size, size)``: smooth bumps inside the central quarter, zero at the top scale."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    bump = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 8.0) * ((r.abs()[:, None] <= 5) & (r.abs()[None, :] <= 5))
    F = torch.randn(1, C, S, 1, 1, dtype=torch.float64) * bump
    F[:, :, -1] = 0
    return F


@torch.no_grad()
@pytest.mark.parametrize("readout", ["max", "sum"])
def test_the_readout_is_invariant_to_the_scale_action(readout):
    """Max over space, or the Haar-weighted sum (a bilinear dilation by 2 has exactly 4x the sum), then
    max over scales: exact for class maps inside the frame that leave no scale at the ends."""
    net = create("scalemnist", group="scale2x3", readout=readout, head_init="whitening", channels=6).double()
    F = _lifted_bump(3)
    got, want = net.forward_head(scale.act_on_lifted(net.group, 1, F)), net.forward_head(F)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@torch.no_grad()
def test_the_mean_readout_is_not_invariant():
    net = create("scalemnist", readout="mean", head_init="whitening", channels=6).double()
    F = _lifted_bump(3)
    assert not torch.allclose(net.forward_head(scale.act_on_lifted(net.group, 1, F)), net.forward_head(F))


@torch.no_grad()
def test_the_features_of_a_whole_network_are_equivariant():
    """Lifting, a block and the classifier (batch norm in eval mode acts point-wise): exact in float64
    where the dilation copies pixels, at the scale index whose receptive field stays in the frame and
    away from the ends of the scale range (index 2 of the dilated input against index 1)."""
    torch.manual_seed(0)
    net = create(
        "scalemnist", group="scale2x4", norm="batch", block_sizes=(1,), patch_size=3, head_init="whitening"
    ).double()
    net.eval()
    x = torch.nn.functional.pad(torch.rand(1, 1, 21, 21, dtype=torch.float64), (4, 4, 4, 4))  # 29x29
    maps = net.head(net.features(x))
    maps2 = net.head(net.features(scale.act_on_image(net.group, 1, x)))
    c, R = 14, 1  # c + 2m ± 4 (block) ± 8 (lifting at scale 8) stays in the frame for |m| <= 1
    got = maps2[:, :, 2, c - 2 * R : c + 2 * R + 1 : 2, c - 2 * R : c + 2 * R + 1 : 2]
    want = maps[:, :, 1, c - R : c + R + 1, c - R : c + R + 1]
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    assert (maps2[:, :, 1, c - 2 * R : c + 2 * R + 1 : 2, c - 2 * R : c + 2 * R + 1 : 2] - want).abs().max() > 1e-3


@torch.no_grad()
def test_save_pretrained_and_load_rebuild_a_scale_net(tmp_path):
    net = create("scalemnist", channels=6, num_heads=1, block_sizes=(1,), head_init="whitening").eval()
    net.save_pretrained(tmp_path / "m")
    back = gsa.models.load(tmp_path / "m")
    assert isinstance(back, ScaleGSANet) and back.group is net.group
    x = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(back(x), net(x))


def test_the_scale_layers_keep_their_spread_positional_biases():
    """GSANet.reset_parameters re-applies the spread init of every coordinate MLP, also the scale layers'."""
    net = create("scalemnist", channels=6, num_heads=1, lifting_heads=1)
    mlp = net.lifting.row_encoding
    spread = -mlp.fc1.weight.detach()[:, 0] * torch.linspace(-1, 1, mlp.fc1.out_features)
    torch.testing.assert_close(mlp.fc1.bias.detach(), spread)
