"""gsa.viz.scale: the scale-robustness demo (quick version) and its dataset transform."""

from __future__ import annotations

import pytest
import torch

from gsa import scale
from gsa.viz import ScaleSetup, rescale_digits, scale_accuracy_figure


def test_rescale_digits_dilates_each_image_by_its_own_factor():
    x = torch.rand(3, 1, 9, 9, dtype=torch.float64)
    y = rescale_digits(x, torch.tensor([0.5, 1.0, 2.0]))
    for img, out, f in zip(x, y, (0.5, 1.0, 2.0)):
        torch.testing.assert_close(out, scale.rescale_image(img, f))
    torch.testing.assert_close(rescale_digits(x, 2.0), scale.rescale_image(x, 2.0))
    assert rescale_digits(x[:0], 2.0).shape == (0, 1, 9, 9)


@pytest.mark.slow
def test_quick_scale_accuracy_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    res = scale_accuracy_figure(tmp_path / "scale_accuracy.png", setup=ScaleSetup.quick(), progress="plain")
    out = capsys.readouterr().out
    assert "scale2x3 epoch 1/1, step 2/2: train loss" in out and "img/s" in out  # progress while training
    assert res["setup"]["model_args"]["norm"] == "batch" and res["setup"]["warmup"] == 0.05  # recorded
    data = (tmp_path / "scale_accuracy.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert res["factors"] == [0.5, 1.0, 2.0] and res["train_images"] == 16
    for group in ("scale2x3", "scale2x1"):
        assert len(res[group]["accuracy"]) == 3 and 0 <= res[group]["random_scale_accuracy"] <= 1
    assert res["scale2x3"]["params"] == res["scale2x1"]["params"]  # the z2 twin has the same size
