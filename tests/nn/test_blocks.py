"""LayerNorm of the transformer blocks: exactly GroupNorm(1, C) forward, safe backward on constant input."""

import torch

import gsa
from gsa.nn.blocks import LayerNorm


def _pair(channels=6, seed=0):
    torch.manual_seed(seed)
    ours = LayerNorm(channels)
    ref = torch.nn.GroupNorm(1, channels)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 1.5, channels))
            m.bias.copy_(torch.linspace(-1.0, 1.0, channels))
    return ours, ref


def test_layer_norm_is_group_norm_on_ordinary_input():
    ours, ref = _pair()
    x = torch.randn(3, 6, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ours.double(), ref.double()
    y, y_ref = ours(x), ref(x2)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g), y_ref.backward(g)
    assert torch.allclose(x.grad, x2.grad, atol=1e-12)
    assert torch.allclose(ours.weight.grad, ref.weight.grad) and torch.allclose(ours.bias.grad, ref.bias.grad)


def test_constant_sample_passes_no_gradient_to_its_input_only():
    ours, ref = _pair()
    x = torch.randn(3, 6, 4, 5, 5)
    x[1] = 0.0  # a blank sample
    x[2] = 0.25  # a constant one
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, y_ref = ours(xa), ref(xb)
    assert torch.equal(y, y_ref)  # forward unchanged
    g = torch.randn_like(y)
    y.backward(g), y_ref.backward(g)
    assert xb.grad[1].abs().max() > 100  # the exact derivative there: 1/sqrt(eps) times g
    assert torch.count_nonzero(xa.grad[1:]) == 0
    assert torch.allclose(xa.grad[0], xb.grad[0], atol=1e-6)
    assert torch.allclose(ours.bias.grad, ref.bias.grad) and torch.allclose(
        ours.weight.grad, ref.weight.grad, atol=1e-5
    )


def test_blank_image_gives_finite_gradients_in_a_whole_network():
    # 21 stacked norms at zero variance multiplied the gradient by 316**21 (overflow -> NaN) before
    torch.manual_seed(0)
    net = gsa.models.create(
        "rotmnist",
        channels=8,
        num_heads=2,
        patch_size=3,
        head_init="whitening",
        attention_dropout=0.0,
        value_dropout=0.0,
    )
    x = torch.randn(3, 1, 28, 28)
    x[0] = 0.0
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_training_on_blank_images_stays_finite_with_the_default_zero_classifier():
    # with head_init="zero" the first step moves only the classifier; the NaN came at the second
    torch.manual_seed(0)
    net = gsa.models.create("rotmnist", channels=8, num_heads=2, patch_size=3, attention_dropout=0.0, value_dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    x[1] = 0.0
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
