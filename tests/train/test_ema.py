"""The weights' moving average (``--ema``): the update rule, and what the Trainer validates, keeps,
tests and resumes with it."""

import dataclasses

import pytest
import torch
from torch import nn

from gsa.errors import ConfigError
from gsa.train import checkpoint as ckpt
from gsa.train.config import TrainConfig
from gsa.train.ema import decay_at, make_ema
from gsa.train.engine import train
from gsa.train.testing import toy_config
from gsa.train.trainer import Trainer


def test_the_decay_ramps_up_to_its_value():
    assert decay_at(0.999, 0) == pytest.approx(0.1)
    assert decay_at(0.999, 10) == pytest.approx(11 / 20)
    assert decay_at(0.999, 10**6) == 0.999
    assert decay_at(0.5, 100) == 0.5


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_make_ema_refuses_a_decay_outside_the_open_unit_interval(decay):
    with pytest.raises(ValueError, match=r"EMA decay must be in \(0, 1\)"):
        make_ema(nn.Linear(2, 2), decay)


def test_the_average_follows_the_rule_for_parameters_and_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    ema = make_ema(net, 0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ema.update_parameters(net)  # the first update copies the weights
    for n in range(5):
        net(torch.randn(8, 3, dtype=torch.float64)).square().sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(net)
        d = decay_at(0.9, n + 1)
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    got = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, rtol=0, atol=1e-14), k
    assert got["1.num_batches_tracked"] == 5  # counts are copied, not averaged
    assert not torch.equal(got["1.running_mean"], net.state_dict()["1.running_mean"])


def test_best_weights_and_the_test_are_the_average(tmp_path, toy):
    t = Trainer(toy_config(tmp_path / "run", ema=0.9, norm="batch"))
    t.begin()
    t.fit()
    assert t.ema.n_averaged == t.pos.step == 12
    best, _ = ckpt.read_weights(tmp_path / "run" / ckpt.BEST)
    last, _ = ckpt.read_weights(tmp_path / "run" / ckpt.LAST)
    trained = t.model.state_dict()
    assert any(not torch.equal(last[k], best[k]) for k in best)  # the average is not the trained weights
    assert all(torch.equal(last[k], trained[k]) for k in last)
    if t.pos.best_epoch == 2:  # the best epoch is the last one: best.safetensors is today's average
        assert all(torch.equal(v, t.ema.module.state_dict()[k]) for k, v in best.items())
    test = t.test()  # loads the best (averaged) weights into the model
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in best.items())
    assert test.count == 48
    t.close()


def test_an_interrupted_run_with_ema_resumes_exactly(tmp_path, toy):
    ref = tmp_path / "ref"
    train(toy_config(ref, ema=0.8, norm="batch", epochs=3))
    run = tmp_path / "run"
    train(toy_config(run, ema=0.8, norm="batch", epochs=3, max_steps=8))  # stops inside epoch 2
    assert ckpt.load_state(run / ckpt.STATE)["ema"]["n_averaged"] == 8
    train(dataclasses.replace(TrainConfig.load(run), max_steps=None), resume=True)
    for name in (ckpt.BEST, ckpt.LAST):
        want, _ = ckpt.read_weights(ref / name)
        got, _ = ckpt.read_weights(run / name)
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert ckpt.load_state(run / ckpt.STATE)["ema"]["n_averaged"] == 18


def test_resume_refuses_to_add_or_drop_the_average(tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(run, max_steps=3))
    with pytest.raises(ConfigError, match="ema"):
        train(dataclasses.replace(TrainConfig.load(run), max_steps=None, ema=0.99), resume=True)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan")])
def test_config_refuses_a_bad_decay(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"--ema must be in \(0, 1\)"):
        toy_config(tmp_path / "r", ema=bad)
