"""The per-step LR schedule: linear warm-up, then constant or cosine to zero."""

import math

import pytest
import torch

from gsa.errors import ConfigError
from gsa.train.config import make_config
from gsa.train.optim import build_optimizer, build_scheduler
from gsa.train.schedule import LRSchedule


def _lrs(steps_per_epoch=10, **overrides):
    model = torch.nn.Linear(2, 2)
    cfg = make_config("mini", lr=1.0, **overrides)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_rises_linearly_then_decays_to_zero():
    lrs = _lrs(epochs=2, scheduler="cosine", warmup_epochs=0.5)  # 5 warm-up steps of 20
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))


def test_constant_without_warmup_is_flat():
    assert _lrs(epochs=1, scheduler="constant", warmup_epochs=0.0) == pytest.approx([1.0] * 10)


def test_cosine_without_warmup_starts_at_the_base_lr():
    lrs = _lrs(epochs=1, scheduler="cosine", warmup_epochs=0.0)
    assert lrs[0] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [-0.1, 3.0])
def test_warmup_outside_the_run_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--warmup-epochs must be in"):
        make_config("mini", epochs=2, warmup_epochs=bad)


# --------------------------------------------------------------------------- LRSchedule itself
def test_lr_schedule_warmup_then_cosine_to_zero_and_flat_after():
    s = LRSchedule("cosine", total=10, warmup=4)
    assert [s(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s(4) == pytest.approx(1.0) and s(7) == pytest.approx(0.5)
    assert s(10) == pytest.approx(0.0) and s(25) == pytest.approx(0.0)


def test_lr_schedule_constant_and_clipped_arguments():
    assert [LRSchedule("constant", total=5)(i) for i in (0, 3, 99)] == [1.0, 1.0, 1.0]
    s = LRSchedule("cosine", total=0, warmup=7)  # total >= 1, warm-up clipped to the run
    assert (s.total, s.warmup) == (1, 0) and s(0) == pytest.approx(1.0)
    assert LRSchedule("constant", total=3, warmup=9).warmup == 3


def test_build_scheduler_uses_lr_schedule_and_saves_its_fields():
    cfg = make_config("mini", lr=1.0, epochs=2, scheduler="cosine", warmup_epochs=0.5)
    sched = build_scheduler(cfg, build_optimizer(cfg, torch.nn.Linear(2, 2)), steps_per_epoch=10)
    (fn,) = sched.lr_lambdas
    assert isinstance(fn, LRSchedule) and (fn.kind, fn.total, fn.warmup) == ("cosine", 20, 5)
    assert sched.state_dict()["lr_lambdas"] == [{"kind": "cosine", "total": 20, "warmup": 5}]  # in last.state.pt
