"""gsa.scale.group: names, scales, and the actions on images and lifted maps.

(Named ``test_scale_group.py``, not ``test_group.py``: test files share one namespace of basenames.)
"""

import pytest
import torch

import gsa
from gsa import scale


def test_names_and_scales():
    g = scale.get("scale2x3")
    assert g.scales == [1, 2, 4] and g.order == len(g) == 3 and g.base == 2
    assert scale.get(" Scale-2x3 ") is g and scale.get(g) is g
    assert scale.get("scale3x2").scales == [1, 3] and scale.get("scale3x2") is scale.get("SCALE_3X2")
    assert scale.names() == ["scale2x1", "scale2x2", "scale2x3", "scale2x4"]
    assert scale.is_scale_group("scale2x5") and not scale.is_scale_group("p4") and not scale.is_scale_group(4)
    assert g.log_scale(2) == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())


@pytest.mark.parametrize("name", ["scale1x3", "scale2x0", "scale", "p4", "scale1.5x3"])
def test_unknown_names_raise_one_line(name):
    with pytest.raises(ValueError, match="unknown scale group") as e:
        scale.get(name)
    assert "\n" not in str(e.value) and "scale{base}x{S}" in str(e.value)


def test_rotation_registry_does_not_take_scale_groups():
    with pytest.raises(ValueError, match="unknown group"):
        gsa.groups.get("scale2x3")


def test_bad_group_objects():
    with pytest.raises(ValueError, match="integer base >= 2"):
        scale.ScaleGroup("s", 1, 3)
    with pytest.raises(ValueError, match="num_scales >= 1"):
        scale.ScaleGroup("s", 2, 0)
    with pytest.raises(TypeError, match="name or a gsa.scale.ScaleGroup"):
        scale.get(3)


def test_rescale_by_two_copies_the_pixels_at_even_distance_from_the_centre():
    x = torch.randn(2, 3, 15, 11, dtype=torch.float64)
    y = scale.rescale_image(x, 2.0)
    # output pixel c + 2m is input pixel c + m (c = (7, 5)); the rest is interpolated
    assert torch.allclose(y[..., 1::2, 1::2], x[..., 4:11, 3:8], rtol=0, atol=1e-12)
    assert not torch.allclose(y[..., 0::2, 0::2][..., 1:-1, 1:-1], x[..., 4:10, 3:7], atol=1e-3)
    # shrinking by 2 samples every other pixel; outside the input is zero
    z = scale.rescale_image(x, 0.5)
    assert torch.allclose(z[..., 4:11, 3:8], x[..., 1::2, 1::2][..., :7, :5], rtol=0, atol=1e-12)
    assert z[..., :3, :].abs().max() == 0
    assert torch.equal(scale.rescale_image(x, 1), x)


def test_rescale_about_the_centre_of_an_even_image():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[..., 3:5, 3:5] = 1.0  # the 2x2 pixels around the centre (3.5, 3.5)
    y = scale.rescale_image(x, 2.0)
    assert torch.equal(y, y.flip(-1)) and torch.equal(y, y.flip(-2))  # still centred
    assert float(y.sum()) == pytest.approx(4 * float(x.sum()), rel=0.3)


def test_rescale_errors():
    with pytest.raises(ValueError, match="factor must be a finite number > 0"):
        scale.rescale_image(torch.zeros(1, 1, 4, 4), 0.0)
    with pytest.raises(ValueError, match="floating-point tensor"):
        scale.rescale_image(torch.zeros(4, 4, dtype=torch.uint8), 2.0)


def test_act_on_lifted_shifts_the_scale_axis_with_zeros_shifted_in():
    g = scale.get("scale2x3")
    x = torch.randn(1, 2, 3, 9, 9, dtype=torch.float64)
    up = scale.act_on_lifted(g, 1, x)
    assert up[:, :, 0].abs().max() == 0
    assert torch.allclose(up[:, :, 1:], scale.act_on_image(g, 1, x[:, :, :2]), rtol=0, atol=1e-14)
    down = scale.act_on_lifted(g, -1, x)
    assert down[:, :, 2].abs().max() == 0
    assert torch.allclose(down[:, :, :2], scale.rescale_image(x[:, :, 1:], 0.5), rtol=0, atol=1e-14)
    assert scale.act_on_lifted(g, 3, x).abs().max() == 0  # everything shifted out
    with pytest.raises(ValueError, match="S=3"):
        scale.act_on_lifted(g, 1, x[:, :, :2])
