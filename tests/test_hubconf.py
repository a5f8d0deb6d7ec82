"""hubconf.py: torch.hub.load(<this checkout>, "gsanet", source="local", ...)."""

from pathlib import Path

import pytest
import torch

import gsa

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_builds_a_preset():
    net = torch.hub.load(str(ROOT), "gsanet", source="local", preset="rotmnist", group="p4")
    assert type(net).__name__ == "GSANet" and net.num_parameters() == 44428


def test_torch_hub_loads_trained_weights(tmp_path):
    saved = gsa.models.create("rotmnist", channels=6, num_heads=2)
    saved.pretrained_cfg.update(mean=(0.1,), std=(0.3,))
    folder = saved.save_pretrained(tmp_path / "hub")
    net = torch.hub.load(str(ROOT), "gsanet", source="local", weights=str(folder))
    assert not net.training and net.config == saved.config and net.pretrained_cfg == saved.pretrained_cfg
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="leave out preset"):
        torch.hub.load(str(ROOT), "gsanet", source="local", weights=str(folder), channels=8)
