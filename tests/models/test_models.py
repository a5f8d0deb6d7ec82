"""GSA-Nets: presets, exact parameter counts, invariant logits, gradients, bad input."""

import pytest
import torch

import gsa
from gsa.models import GSANet, GSANetConfig, create, list_presets

# Trainable parameter counts of the original code (spec table); local 5×5 and global agree.
COUNTS = {
    ("rotmnist", "z2"): 44_368,
    ("rotmnist", "p4"): 44_428,
    ("rotmnist", "p8"): 44_508,
    ("rotmnist", "p12"): 44_588,
    ("rotmnist", "p16"): 44_668,
    ("cifar10", "z2"): 3_001_648,
    ("cifar10", "mz2"): 3_001_808,
    ("pcam", "z2"): 206_926,
    ("pcam", "p4"): 207_034,
    ("pcam", "p8"): 207_178,
    ("pcam", "p4m"): 207_178,
}


@pytest.mark.parametrize("preset,group", list(COUNTS), ids=[f"{p}-{g}" for p, g in COUNTS])
@pytest.mark.parametrize("patch_size", [5, None], ids=["local5", "global"])
def test_parameter_counts_equal_the_original(preset, group, patch_size):
    net = create(preset, group=group, patch_size=patch_size)
    assert net.num_parameters() == COUNTS[preset, group]


def test_cifar10_offers_the_papers_and_the_codes_dropout_rates_with_the_same_parameters():
    from gsa.models import CIFAR10_DROPOUT

    assert CIFAR10_DROPOUT == {
        "paper": {"input_dropout": 0.3, "dropout_after_pool": 0.2},  # App. F.2
        "code": {"input_dropout": 0.2, "dropout_after_pool": 0.3},  # the original's model.py
    }
    preset = gsa.models.preset_config("cifar10")
    assert (preset.input_dropout, preset.dropout_after_pool) == (0.3, 0.2)  # the preset: the paper's text
    for version, rates in CIFAR10_DROPOUT.items():
        net = create("cifar10", group="z2", **rates)
        pools = [m.p for m in net.blocks if isinstance(m, torch.nn.Dropout)]
        assert (net.input_dropout.p, pools) == (rates["input_dropout"], [rates["dropout_after_pool"]] * 2), version
        assert net.num_parameters() == COUNTS["cifar10", "z2"]


def test_list_presets_and_errors():
    assert list_presets() == ["cifar10", "pcam", "rotmnist", "scalemnist"]
    with pytest.raises(ValueError, match="unknown preset"):
        create("imagenet")
    with pytest.raises(ValueError, match="unknown group"):
        create("rotmnist", group="p0")
    assert create("rotmnist", group="C5", channels=6, num_heads=1).group is gsa.groups.get("p5")
    with pytest.raises(ValueError, match="unknown GSANetConfig fields"):
        create("rotmnist", colour=True)
    with pytest.raises(ValueError, match="crop has 2 entries"):
        create("rotmnist", crop=(1, 1))


def test_overrides_and_config_roundtrip():
    net = create("cifar10", group="mz2", num_classes=7, norm="batch", activation="relu", num_heads=3)
    cfg = net.config
    assert (cfg.num_classes, cfg.norm, cfg.activation, cfg.group) == (7, "batch", "relu", "mz2")
    again = GSANet(GSANetConfig.from_dict(cfg.to_dict()))
    assert again.num_parameters() == net.num_parameters()
    assert create("rotmnist", patch_size="global").config.patch_size is None


# Invariance: float64, exact elements. Inputs are sized so every max-pool sees an even size.
INVARIANCE = [
    ("rotmnist", "p4", 5, (2, 1, 28, 28), {}),
    ("rotmnist", "p4m", 5, (1, 1, 24, 24), {"num_heads": 2}),
    ("rotmnist", "p8", None, (1, 1, 22, 22), {"num_heads": 1, "channels": 6}),
    # any order: exact at 0°/180° (p6) and the mirror (D3 = p3m); the other elements are interpolated
    ("rotmnist", "p6", None, (1, 1, 22, 22), {"num_heads": 1, "channels": 6}),
    ("rotmnist", "D3", 5, (1, 1, 24, 24), {"num_heads": 1, "channels": 6}),
    ("cifar10", "mz2", 5, (1, 3, 16, 16), {"channels": 12, "num_heads": 2}),
    # PCam pools 4 times: exact only for sizes 56, 72, 88, 104, ... (at 96 one pool sees 7 rows)
    ("pcam", "p4m", 5, (1, 3, 56, 56), {"num_heads": 1, "channels": 6}),
]


@pytest.mark.parametrize("preset,group,ps,shape,kw", INVARIANCE, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in INVARIANCE])
def test_logits_are_invariant(preset, group, ps, shape, kw):
    net = create(preset, group=group, patch_size=ps, head_init="whitening", **kw)
    errs = gsa.check_equivariance(net, group, shape)
    assert max(errs.values()) < 1e-11, errs


def test_logits_are_invariant_in_float32():
    net = create("rotmnist", group="p4", num_heads=3, head_init="whitening")
    errs = gsa.check_equivariance(net, "p4", (2, 1, 28, 28), dtype=torch.float32)
    assert max(errs.values()) < 1e-5, errs


def test_batch_norm_model_is_invariant_in_eval():
    net = create("rotmnist", group="p4", norm="batch", num_heads=2, head_init="whitening")
    net.train()
    for _ in range(3):
        net(torch.randn(4, 1, 24, 24))  # populate running statistics
    errs = gsa.check_equivariance(net, "p4", (1, 1, 24, 24))
    assert max(errs.values()) < 1e-11, errs


def test_forward_backward_every_parameter_gets_a_gradient():
    for preset, shape in [("rotmnist", (2, 1, 28, 28)), ("pcam", (2, 3, 56, 56))]:
        net = create(preset, group="p4", num_heads=2)
        net.train()
        out = net(torch.randn(*shape))
        assert out.shape == (2, net.config.num_classes) and torch.isfinite(out).all()
        torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_initialisation_follows_whitening_scale():
    net = create("cifar10", group="z2", patch_size=5)
    w = net.blocks[0].attention.query.weight  # (9*48, 96)
    assert abs(w.std().item() - (2 / 96) ** 0.5) < 0.01
    assert net.blocks[0].attention.query.bias.abs().max() == 0


def test_bad_model_input_raises():
    net = create("rotmnist", group="p4", num_heads=1)
    with pytest.raises(ValueError, match="expects 1 input channels"):
        net(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, C, X, Y\)"):
        net(torch.randn(28, 28))


@pytest.mark.parametrize("preset, least", [("rotmnist", 22), ("cifar10", 4), ("pcam", 56)])
def test_min_input_size_follows_the_crops_and_pools(preset, least):
    net = create(preset, group="z2", num_heads=1, channels=6, lifting_heads=1).eval()
    assert net.min_input_size() == least
    c = net.config.in_channels
    assert net(torch.randn(1, c, least, least)).shape == (1, net.config.num_classes)
    with pytest.raises(ValueError, match=f"at least {least}x{least} pixels .* got {least - 1}x{least}"):
        net(torch.randn(1, c, least - 1, least))


def test_input_pool_averages_the_image_first_and_keeps_invariance_exact():
    net = create("rotmnist", group="p4m", num_heads=1, channels=6, crop=0, input_pool=2, head_init="whitening")
    assert isinstance(net.input_pool, torch.nn.AvgPool2d) and net.min_input_size() == 4
    errs = gsa.check_equivariance(net, "p4m", (1, 1, 28, 28))
    assert max(errs.values()) < 1e-11, errs
    x = torch.randn(2, 1, 28, 28)
    pooled = create("rotmnist", group="p4", num_heads=1, channels=6, crop=0, input_pool=2).eval()
    plain = create("rotmnist", group="p4", num_heads=1, channels=6, crop=0).eval()
    plain.load_state_dict(pooled.state_dict())  # no parameters of its own: the same weights fit both
    assert torch.allclose(pooled.features(x), plain.features(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="at least 4x4 pixels"):
        pooled(torch.randn(1, 1, 3, 3))


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_bad_input_pool_raises(value):
    with pytest.raises(ValueError, match="input_pool must be a positive integer"):
        create("rotmnist", input_pool=value)


def test_head_channels_sets_every_heads_width_and_keeps_invariance_exact():
    net = create("rotmnist", group="p4", channels=12, num_heads=4, head_channels=3, crop=0, head_init="whitening")
    layers = [net.lifting] + [m.attention for m in net.blocks if hasattr(m, "attention")]
    assert [(m.num_heads, m.mid_channels) for m in layers] == [(4, 3)] * 6
    assert net.lifting.query.out_features == 12  # 4 heads x 3 channels: the usual multi-head split
    wide = create("rotmnist", group="p4", channels=12, num_heads=4, crop=0)
    assert wide.lifting.mid_channels == 6 and wide.num_parameters() > net.num_parameters()
    errs = gsa.check_equivariance(net, "p4", (1, 1, 28, 28))
    assert max(errs.values()) < 1e-11, errs


@pytest.mark.parametrize("value", [0, 2, 4.0, True])
def test_bad_head_channels_raises(value):
    with pytest.raises(ValueError, match="head_channels must be None .* or an int >= 3"):
        create("rotmnist", head_channels=value)


def test_empty_batch_gives_empty_logits():
    net = create("rotmnist", group="p4", num_heads=1).eval()
    assert net(torch.randn(0, 1, 28, 28)).shape == (0, 10)


# ----------------------------------------------------------------------------- learning-related options
def test_new_network_starts_at_the_uniform_prediction():
    net = create("rotmnist", group="p4", num_heads=2)
    logits = net(torch.randn(3, 1, 28, 28))
    assert torch.equal(logits, torch.zeros(3, 10))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3]))
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 1e-6


def test_zero_classifier_still_learns_and_stays_invariant():
    torch.manual_seed(0)
    net = create("rotmnist", group="p4", num_heads=1, channels=6)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 24, 24), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert net.head.weight.abs().max() > 0
    assert max(gsa.check_equivariance(net, "p4", (1, 1, 24, 24)).values()) < 1e-11


def test_original_style_reproduces_the_original_read_out_and_init():
    from gsa.models import ORIGINAL_STYLE

    torch.manual_seed(0)
    net = create("rotmnist", group="p4", num_heads=2, **ORIGINAL_STYLE).eval()
    assert net.num_parameters() == create("rotmnist", group="p4", num_heads=2).num_parameters()
    assert net.head.weight.abs().max() > 0
    assert net.lifting.row_encoding.fc1.bias.abs().max() == 0
    x = torch.randn(2, 1, 28, 28)
    maps = net.head(net.features(x))
    torch.testing.assert_close(net(x), maps.sum(dim=(-2, -1)).amax(dim=-1))
    mean_net = create("rotmnist", group="p4", num_heads=2, head_init="whitening").eval()
    maps = mean_net.head(mean_net.features(x))
    torch.testing.assert_close(mean_net(x), maps.mean(dim=(-2, -1)).amax(dim=-1))


def test_spread_coordinate_init_tells_offsets_apart():
    from gsa.nn.positional import CoordinateMLP

    torch.manual_seed(0)
    t = torch.linspace(-1, 1, 9).view(-1, 1)
    spread, zero = CoordinateMLP(4, init="spread"), CoordinateMLP(4, init="zero")
    enc = spread(t)
    assert torch.cdist(enc[t[:, 0] > 0], enc[t[:, 0] > 0]).max() > 1e-2  # not a function of sign(t) only
    enc0 = zero(t)
    torch.testing.assert_close(enc0[5:], enc0[5:6].expand(4, -1), atol=1e-3, rtol=0)  # sign(t) only (up to eps)
    with pytest.raises(ValueError, match="unknown coordinate init"):
        CoordinateMLP(4, init="random")


@pytest.mark.parametrize("field,value", [("readout", "max"), ("head_init", "ones"), ("coordinate_init", "x")])
def test_unknown_learning_options_raise(field, value):
    with pytest.raises(ValueError, match=f"unknown {field}"):
        create("rotmnist", **{field: value})


def test_the_positional_encoding_is_a_config_field_of_every_layer():
    from gsa.nn.positional import FourierEncoding

    net = create("rotmnist", group="p4", num_heads=1, positional="fourier")
    layers = [net.lifting] + [b.attention for b in net.blocks if hasattr(b, "attention")]
    assert len(layers) == 6 and all(isinstance(m.positional, FourierEncoding) for m in layers)
    assert GSANetConfig.from_dict(net.config.to_dict()).positional == "fourier"
    with pytest.raises(ValueError, match="unknown positional encoding 'nope'; expected one of: rowcol, joint"):
        create("rotmnist", positional="nope")
    joint = create("rotmnist", group="p4", num_heads=1, positional="joint").lifting.position_mlp[0]
    spread = -torch.linspace(-1, 1, 16) * joint.weight.detach().norm(dim=1)  # after the network's weight init
    torch.testing.assert_close(joint.bias.detach(), spread)


def test_check_equivariance_refuses_a_vacuous_check():
    net = create("rotmnist", group="p4", num_heads=1)
    with pytest.raises(ValueError, match="identically zero"):
        gsa.check_equivariance(net, "p4", (1, 1, 24, 24))


def test_timm_style_features_head_and_classifier():
    net = create("rotmnist", group="p4", channels=6, num_heads=2, block_sizes=(1, 1), crop=0).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.shape == (2, 6, 4, 4, 4) and torch.equal(net.forward_head(feats), net(x))
        net.head.weight.normal_()
        pooled = net.forward_head(feats, pre_logits=True)  # (B, C, |H|)
        via_pooled = torch.einsum("kc,bcg->bkg", net.head.weight.flatten(1), pooled).amax(-1)
        assert pooled.shape == (2, 6, 4) and torch.allclose(via_pooled, net(x), atol=1e-5)
    assert net.get_classifier() is net.head
    net.reset_classifier(5)
    assert net.config.num_classes == 5 and net.pretrained_cfg["num_classes"] == 5
    with torch.no_grad():
        assert torch.equal(net(x), torch.zeros(2, 5))  # head_init "zero"
    net = create("rotmnist", group="p4", channels=6, num_heads=2, head_init="whitening").double()
    net.reset_classifier(3)
    assert net.head.weight.dtype == torch.float64 and net.head.weight.abs().sum() > 0


def test_preprocess_normalises_raw_images_as_pretrained_cfg_says():
    net = create("rotmnist", channels=6, num_heads=2)
    raw = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(net.preprocess(raw), raw.float() / 255)  # a fresh network: no normalisation
    net.pretrained_cfg.update(mean=(0.5,), std=(0.25,))
    assert torch.allclose(net.preprocess(raw[0]), (raw.float() / 255 - 0.5)[:1] / 0.25)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\)"):
        net.preprocess(torch.rand(2, 3, 4, 4))
