import pytest
import torch
from torch import nn

from gsa.errors import ConfigError
from gsa.train.config import make_config
from gsa.train.optim import build_optimizer, build_scheduler
from gsa.train.precision import Precision
from gsa.train.steps import compute_loss

CPU = torch.device("cpu")


def _setup(scheduler="cosine"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    cfg = make_config("mini", lr=0.1, scheduler=scheduler, epochs=1, warmup_epochs=0.0)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, steps_per_epoch=10)
    return model, opt, sched


def test_fp16_overflow_skips_optimizer_and_scheduler_step():
    model, opt, sched = _setup()
    prec = Precision("fp16", CPU, init_scale=2.0**60)  # scaled grads overflow in fp16
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with prec.autocast():
        out = model(x)
    assert out.dtype == torch.float16
    loss = compute_loss(out, y)
    assert loss.dtype == torch.float32
    stepped, _ = prec.backward_and_step(loss, opt, model.parameters())
    assert not stepped
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p)  # no update
    assert prec.scaler.get_scale() < 2.0**60
    # the engine only steps the schedule after a real step: lr unchanged
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_fp16_normal_step_and_grad_clip_after_unscale():
    model, opt, sched = _setup()
    prec = Precision("fp16", CPU, init_scale=2.0**8)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with prec.autocast():
        out = model(x)
    stepped, norm = prec.backward_and_step(compute_loss(out, y), opt, model.parameters(), grad_clip=1e-3)
    assert stepped
    # the norm is of the unscaled gradient (scale 256 would make it far larger)
    assert 1e-4 < norm < 10


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_no_scaler_modes(mode):
    model, opt, sched = _setup()
    prec = Precision(mode, CPU)
    assert not prec.scaler.is_enabled() and prec.state_dict() == {}
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with prec.autocast():
        out = model(x)
    assert out.dtype == (torch.bfloat16 if mode == "bf16" else torch.float32)
    stepped, _ = prec.backward_and_step(compute_loss(out, y), opt, model.parameters())
    assert stepped


def test_unknown_precision():
    with pytest.raises(ConfigError, match="unknown precision"):
        Precision("fp64", CPU)


def test_cosine_schedule_follows_epochs_not_max_steps():
    model, opt, sched = _setup("cosine")
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_training_in_fp16_on_the_cpu_warns_with_the_reason(tmp_path):
    from gsa.train.engine import train
    from gsa.train.hooks import use_hooks
    from gsa.train.testing import toy_config, toy_hooks

    with use_hooks(toy_hooks()), pytest.warns(RuntimeWarning, match="fp16 on the CPU is slower than fp32"):
        train(toy_config(tmp_path / "run", epochs=1, precision="fp16", device="cpu", rotation_step=0))
