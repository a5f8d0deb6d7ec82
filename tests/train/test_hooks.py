"""The default factories: dataset descriptions and models that fit them."""

import numpy as np
import pytest

from gsa.errors import ConfigError
from gsa.train.hooks import DataSpec, default_info, default_model
from gsa.train.testing import toy_config


@pytest.mark.parametrize("field, value", [("num_classes", 1), ("num_classes", 0), ("in_channels", 0),
                                          ("num_classes", 2.0), ("in_channels", True)])
def test_data_spec_refuses_impossible_sizes(field, value):
    kw = dict(name="d", in_channels=1, num_classes=3, image_size=(8, 8))
    kw[field] = value
    with pytest.raises(ConfigError, match=f"dataset 'd': {field} must be an integer >= "):
        DataSpec(**kw)


def test_default_model_refuses_images_smaller_than_its_crops_and_pools(tmp_path):
    path = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (30, 20, 20), dtype=np.uint8), labels=np.arange(30) % 3)
    spec = default_info(f"npz:{path}")
    assert (spec.num_classes, spec.image_size) == (3, (20, 20))
    cfg = toy_config("x", dataset=f"npz:{path}", preset="rotmnist", patch_size=3)
    with pytest.raises(ConfigError, match=r"at least 22x22 pixels .*; dataset 'npz:.*small.npz' has 20x20 images"):
        default_model(cfg, spec)
    model = default_model(cfg, DataSpec(name="big", in_channels=1, num_classes=3, image_size=(22, 22)))
    assert model.min_input_size() == 22
