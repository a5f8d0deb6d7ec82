"""``gsa.groups.rotate_image``: the one image rotation (degrees, counter-clockwise as displayed)."""

import pytest
import torch

from gsa.groups import _resample
from gsa.groups import rotate_image as rotate


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0, 1, 2, 3, -1, 5])
def test_quarter_turns_are_bit_identical_to_rot90(dtype, k):
    x = torch.rand(3, 2, 9, 9, dtype=dtype)
    out = rotate(x, k * 90)
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))
    assert out.dtype == dtype and out.shape == x.shape


def test_quarter_turn_given_as_float32_tensor_is_exact():
    x = torch.rand(2, 1, 8, 8)
    angles = torch.tensor([90 + 1e-7, 270 - 1e-7], dtype=torch.float32)  # float32 round-off of quarter turns
    out = rotate(x, angles)
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1], 3, dims=(-2, -1)))


def test_single_image_and_mixed_batch():
    x = torch.rand(1, 6, 6)
    assert torch.equal(rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)))
    batch = torch.rand(4, 1, 6, 6)
    angles = [0.0, 90, 0.3, -90]
    out = rotate(batch, angles)
    assert torch.equal(out[0], batch[0])
    assert torch.equal(out[1], torch.rot90(batch[1], 1, dims=(-2, -1)))
    assert torch.equal(out[3], torch.rot90(batch[3], -1, dims=(-2, -1)))
    assert torch.allclose(out[2], rotate(batch[2], 0.3))


def test_direction_is_counter_clockwise_as_displayed():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 4] = 1.0  # top-right corner
    out = rotate(x, 90)
    assert out[0, 0, 0, 0] == 1.0  # moves to top-left
    # the interpolating path turns the same way as the exact one
    x64 = torch.rand(2, 3, 7, 7, dtype=torch.float64)
    g = _resample(x64, torch.full((2,), 90.0, dtype=torch.float64), "bilinear")
    torch.testing.assert_close(g, torch.rot90(x64, 1, dims=(-2, -1)), atol=1e-9, rtol=0)


def test_non_square_images_turn_exactly():
    x = torch.rand(2, 1, 5, 8, dtype=torch.float64)
    assert torch.equal(rotate(x, 180), torch.rot90(x, 2, dims=(-2, -1)))
    assert torch.equal(rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)))  # 5x8 -> 8x5, exactly
    with pytest.raises(ValueError, match="non-square"):  # per-image quarter turns cannot change shapes
        rotate(x, [90, 0])


def test_45_degrees_sane():
    n = 33
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    r2 = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2
    blob = torch.exp(-r2 / 20.0)[None, None]  # radially symmetric, smooth
    out = rotate(blob, 45)
    assert (out - blob).abs().max() < 2e-2  # symmetric image barely changes
    # a smooth asymmetric image: two 45-degree steps ~ one quarter turn (inside a disk)
    img = torch.exp(-((yy - 12) ** 2 + (xx - 19) ** 2) / 18.0)[None, None]
    twice = rotate(rotate(img, 45), 45)
    target = torch.rot90(img, 1, dims=(-2, -1))
    torch.testing.assert_close(twice, target, atol=6e-2, rtol=0)  # bilinear blurs a little, twice
    assert int(twice.argmax()) == int(target.argmax())
    # zero background comes in at the corners; values stay in range; mass roughly kept
    ones = torch.ones(1, 1, n, n)
    r = rotate(ones, 45)
    assert r[0, 0, 0, 0] == 0 and r[0, 0, n // 2, n // 2] == pytest.approx(1.0)
    assert r.min() >= 0 and r.max() <= 1 + 1e-6
    assert float(out.sum()) == pytest.approx(float(blob.sum()), rel=1e-2)


def test_nearest_mode_and_gradients():
    x = torch.rand(2, 1, 7, 7, requires_grad=True)
    out = rotate(x, [0.4, 1.0], mode="nearest")
    assert out.shape == x.shape
    rotate(x, [0.4, 90]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_errors():
    with pytest.raises(ValueError, match="angles"):
        rotate(torch.rand(3, 1, 4, 4), [0.1, 0.2])
    with pytest.raises(TypeError):
        rotate(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1)
    with pytest.raises(ValueError, match="mode"):
        rotate(torch.rand(1, 1, 4, 4), 0.1, mode="lanczos")
    with pytest.raises(ValueError, match=r"\(\.\.\., X, Y\)"):
        rotate(torch.rand(4), 0.1)
    with pytest.raises(ValueError, match="finite"):
        rotate(torch.rand(1, 4, 4), float("nan"))
