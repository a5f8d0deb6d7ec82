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
    assert group["fused"]  # PyTorch's fused update on the CPU (torch >= 2.4)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_update_equals_the_default_one(name):
    """The fused kernel computes the optimizer's own update (to float round-off)."""
    torch.manual_seed(0)
    cfg = make_config("mini", optimizer=name, lr=0.05, weight_decay=1e-3)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    fused = build_optimizer(cfg, a)
    kw = dict(lr=0.05, weight_decay=1e-3) | ({"momentum": cfg.momentum} if name == "sgd" else {})
    plain = type(fused)(b.parameters(), **kw)
    for _ in range(5):
        x = torch.randn(8, 4)
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_optimizers_without_a_fused_kernel_fall_back(monkeypatch):
    real = torch.optim.Adam

    class NoFused(real):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    opt = build_optimizer(make_config("mini"), _model())
    assert type(opt) is NoFused and not opt.defaults.get("fused")


def test_unknown_optimizer_and_scheduler_are_config_errors():
    cfg = make_config("mini")
    cfg.optimizer = "lion"
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        build_optimizer(cfg, _model())
    cfg = make_config("mini")
    cfg.scheduler = "step"
    with pytest.raises(ConfigError, match="unknown scheduler 'step'"):
        build_scheduler(cfg, build_optimizer(cfg, _model()), 10)
