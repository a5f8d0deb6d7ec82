"""Optimizer and scheduler builders."""

import pytest
import torch

from gsa.errors import ConfigError
from gsa.train.config import make_config
from gsa.train.optim import build_optimizer, build_scheduler


def _model():
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    return model


@pytest.mark.parametrize(
    "name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_build_optimizer_kinds_and_hyperparameters(name, cls):
    cfg = make_config("mini", optimizer=name, lr=0.05, weight_decay=1e-3)
    opt = build_optimizer(cfg, _model())
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-3
    assert len(group["params"]) == 1  # frozen parameters are left out
    if name == "sgd":
        assert group["momentum"] == cfg.momentum


def test_unknown_optimizer_and_scheduler_are_config_errors():
    cfg = make_config("mini")
    cfg.optimizer = "lion"
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        build_optimizer(cfg, _model())
    cfg = make_config("mini")
    cfg.scheduler = "step"
    with pytest.raises(ConfigError, match="unknown scheduler 'step'"):
        build_scheduler(cfg, build_optimizer(cfg, _model()), 10)
