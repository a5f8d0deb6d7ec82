"""End-to-end behaviour of gsa.train.train with the tiny ToyNet (seconds on a CPU)."""

import json
import os
import signal

import pytest
import torch

from gsa.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from gsa.train import checkpoint as ckpt
from gsa.train.config import TrainConfig
from gsa.train.engine import train
from gsa.train.metrics import read_csv
from gsa.train.testing import ToyConfig, ToyNet, toy_config, toy_hooks


def _weights(path):
    tensors, _ = ckpt.read_weights(path)
    return tensors


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


class Tripwire(ToyNet):
    """ToyNet that does something at its N-th training forward pass."""

    def __init__(self, config, at, action):
        super().__init__(config)
        self.at, self.action, self.calls = at, action, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = self.action(out)
        return out


def _tripwire_hooks(at, action, dropout=0.0):
    def model_fn(cfg, spec):
        return Tripwire(ToyConfig(dropout=cfg.dropout or 0.0), at, action)

    return toy_hooks(model_fn)


def test_short_run_writes_everything(tmp_path, toy):
    out = tmp_path / "run"
    report = train(toy_config(out, tensorboard=True))
    for name in (
        "config.json",
        "best.safetensors",
        "last.safetensors",
        "last.state.pt",
        "metrics.csv",
        "report.json",
        "rotation.png",
    ):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    rows = read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["step"]) == 12
    saved = json.loads((out / "report.json").read_text())
    assert saved["test_accuracy"] == report["test_accuracy"]
    for key in (
        "test_accuracy",
        "test_loss",
        "best_valid_accuracy",
        "best_epoch",
        "seconds_per_epoch",
        "images_per_s",
        "peak_memory_bytes",
        "device_name",
        "torch_version",
        "param_count",
        "group",
        "preset",
        "git_commit",
    ):
        assert key in saved, key
    assert saved["test_images"] == 48 and saved["steps"] == 12 and saved["stopped"] == "completed"
    assert saved["rotation"]["angles_deg"] == [0.0, 90.0, 180.0, 270.0]
    assert saved["invariance"]["max_abs_logit_change"] < 1e-5
    assert TrainConfig.load(out).out == str(out)
    assert (out / "rotation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_toy_model_learns(tmp_path, toy):
    report = train(toy_config(tmp_path / "r", epochs=6, lr=3e-2))
    assert report["best_valid_accuracy"] > 0.6


def test_test_split_is_used_once_with_best_valid_weights(tmp_path, toy):
    out = tmp_path / "r"
    report = train(toy_config(out, epochs=3))
    rows = read_csv(out / "metrics.csv")
    best = max(rows, key=lambda r: float(r["valid_acc"]))  # first maximum = the selected epoch
    assert report["best_epoch"] == int(best["epoch"])
    assert _weights(out / "best.safetensors")  # exists
    meta = ckpt.read_weights(out / "best.safetensors")[1]
    assert int(meta["step"]) == report["best_step"]
    assert "test_acc" not in rows[0]


def test_max_steps_caps_and_evaluation_limits(tmp_path, toy):
    report = train(
        toy_config(tmp_path / "r", epochs=5, max_steps=4, eval_subset=20, max_eval_batches=1, eval_batch_size=8)
    )
    assert report["steps"] == 4 and report["stopped"] == "max_steps"
    assert report["test_images"] == 8  # min(20, 1 batch x 8)
    assert report["seconds_per_epoch_extrapolated"]
    assert train(toy_config(tmp_path / "r2", epochs=1, eval_subset=5, eval_batch_size=16))["test_images"] == 5


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_is_exact(tmp_path, sig):
    """Ctrl-C / SIGTERM mid-epoch -> checkpoint -> --resume gives the same final weights as no interruption."""
    kw = dict(epochs=3, dropout=0.3, scheduler="cosine", optimizer="adam")  # dropout exercises RNG restore
    from gsa.train.hooks import use_hooks

    with use_hooks(toy_hooks()):
        ref = train(toy_config(tmp_path / "ref", **kw))

    def send_signal(out):
        os.kill(os.getpid(), sig)
        return out

    run = tmp_path / "run"
    with use_hooks(_tripwire_hooks(at=8, action=send_signal)):
        with pytest.raises(
            TrainingInterrupted,
            match=rf"interrupted \({sig.name}\) during training at step 8; checkpoint saved .*--resume",
        ):
            train(toy_config(run, **kw))
    assert ckpt.load_state(run / ckpt.STATE)["step"] == 8
    with use_hooks(toy_hooks()):
        resumed = train(TrainConfig.load(run), resume=True)
    _assert_same_weights(_weights(tmp_path / "ref" / "last.safetensors"), _weights(run / "last.safetensors"))
    _assert_same_weights(_weights(tmp_path / "ref" / "best.safetensors"), _weights(run / "best.safetensors"))
    assert resumed["test_accuracy"] == ref["test_accuracy"] and resumed["steps"] == ref["steps"] == 18
    rows_ref, rows = read_csv(tmp_path / "ref" / "metrics.csv"), read_csv(run / "metrics.csv")
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in rows_ref]


def test_resume_after_max_steps_matches_uninterrupted(tmp_path, toy):
    kw = dict(epochs=2, scheduler="cosine")
    train(toy_config(tmp_path / "ref", **kw))
    run = tmp_path / "run"
    train(toy_config(run, max_steps=5, **kw))
    cfg = TrainConfig.load(run)
    cfg.max_steps = None
    train(cfg, resume=True)
    _assert_same_weights(_weights(tmp_path / "ref" / "last.safetensors"), _weights(run / "last.safetensors"))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    from gsa.train.hooks import use_hooks

    with use_hooks(_tripwire_hooks(at=9, action=lambda out: out * float("nan"))):
        with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 9 \(epoch 2, batch 3\)") as info:
            train(toy_config(run))
    assert info.value.step == 9
    assert ckpt.load_state(run / ckpt.STATE)["step"] == 6  # end of epoch 1, untouched
    assert all(torch.isfinite(t).all() for t in _weights(run / "last.safetensors").values())


def test_resume_errors(tmp_path, toy):
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        train(toy_config(tmp_path / "empty"), resume=True)
    run = tmp_path / "r"
    train(toy_config(run, epochs=1))
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        train(toy_config(run, epochs=1))


def test_resume_of_finished_run_only_redoes_the_report(tmp_path, toy):
    run = tmp_path / "r"
    first = train(toy_config(run, epochs=1))
    again = train(TrainConfig.load(run), resume=True)
    assert again["test_accuracy"] == first["test_accuracy"] and again["steps"] == first["steps"]
    assert len(read_csv(run / "metrics.csv")) == 1


def test_inconsistent_checkpoint_pair_is_detected(tmp_path, toy):
    from gsa.errors import CheckpointError

    run = tmp_path / "r"
    train(toy_config(run, epochs=1))
    (run / ckpt.MANIFEST).unlink()  # a run written before last.json, whose two files disagree
    state = ckpt.load_state(run / ckpt.STATE)
    state["step"] = 99
    ckpt.save_state(run / ckpt.STATE, state)
    with pytest.raises(CheckpointError, match="weights are from step 6 but last.state.pt is from step 99"):
        train(TrainConfig.load(run), resume=True)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, toy, precision):
    report = train(toy_config(tmp_path / "r", epochs=1, precision=precision, grad_clip=1.0, rotation_step=0))
    assert report["precision"] == precision and report["test_loss"] == report["test_loss"]  # not NaN
    assert not (tmp_path / "r" / "rotation.png").exists()


def test_plain_progress_lines(tmp_path, toy, capsys):
    train(toy_config(tmp_path / "r", epochs=1, progress="plain", log_every=3))
    out = capsys.readouterr().out
    assert "epoch 1/1 3/6 step 3 loss" in out and "img/s" in out
    assert "test accuracy" in out and "invariance check" in out


def test_dataloader_path_matches_tensor_path(tmp_path, toy):
    a = train(toy_config(tmp_path / "a", epochs=1, loader="tensor"))
    b = train(toy_config(tmp_path / "b", epochs=1, loader="dataloader"))
    _assert_same_weights(_weights(tmp_path / "a" / "last.safetensors"), _weights(tmp_path / "b" / "last.safetensors"))
    assert a["test_accuracy"] == b["test_accuracy"]


def test_train_subset(tmp_path, toy):
    report = train(toy_config(tmp_path / "r", epochs=1, train_subset=32))
    assert report["steps_per_epoch"] == 2 and report["steps"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_resume_is_exact_with_deterministic_kernels(tmp_path, precision):
    from gsa.train.hooks import use_hooks

    kw = dict(epochs=2, dropout=0.3, device="cuda", deterministic=True, precision=precision)
    with use_hooks(toy_hooks()):
        train(toy_config(tmp_path / "ref", **kw))
    run = tmp_path / "run"
    with use_hooks(_tripwire_hooks(at=8, action=lambda out: (os.kill(os.getpid(), signal.SIGINT), out)[1])):
        with pytest.raises(TrainingInterrupted):
            train(toy_config(run, **kw))
    with use_hooks(toy_hooks()):
        train(TrainConfig.load(run), resume=True)
    _assert_same_weights(_weights(tmp_path / "ref" / "last.safetensors"), _weights(run / "last.safetensors"))


def test_nan_gradients_with_a_finite_loss_stop_before_the_update(tmp_path):
    """sqrt at 0 has an infinite derivative: the loss is finite, the gradients are not."""
    run = tmp_path / "run"
    from gsa.train.hooks import use_hooks

    with use_hooks(_tripwire_hooks(at=9, action=lambda out: out + torch.sqrt(out - out.detach()))):
        with pytest.raises(NonFiniteLossError, match=r"non-finite gradients .* the update was not applied at step 9"):
            train(toy_config(run))
    assert ckpt.load_state(run / ckpt.STATE)["step"] == 6  # end of epoch 1, untouched
    assert all(torch.isfinite(t).all() for t in _weights(run / "last.safetensors").values())


class _NanValidation(ToyNet):
    """ToyNet whose evaluation outputs are NaN once it has taken ``after`` training steps."""

    def __init__(self, config, after):
        super().__init__(config)
        self.after, self.calls = after, 0

    def forward(self, x):
        out = super().forward(x)
        self.calls += int(self.training)
        return out * float("nan") if (not self.training and self.calls > self.after) else out


def test_a_non_finite_validation_is_never_best(tmp_path):
    from gsa.train.hooks import use_hooks

    run = tmp_path / "run"
    with use_hooks(toy_hooks(lambda cfg, spec: _NanValidation(ToyConfig(), after=6))):
        report = train(toy_config(run))
    rows = read_csv(run / "metrics.csv")
    assert rows[1]["valid_loss"] == "nan"
    assert report["best_epoch"] == 1  # epoch 2's NaN validation did not replace the best weights


class _PoisonedWeight(ToyNet):
    """ToyNet with an unused parameter that turns NaN during training (loss and gradients stay finite)."""

    def __init__(self, config):
        super().__init__(config)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.unused.fill_(float("nan"))
        return super().forward(x)


def test_non_finite_weights_are_never_saved(tmp_path):
    from gsa.train.hooks import use_hooks

    run = tmp_path / "run"
    with use_hooks(toy_hooks(lambda cfg, spec: _PoisonedWeight(ToyConfig()))):
        with pytest.raises(NonFiniteLossError, match=r"non-finite weights \(unused\) at step 6; not saved"):
            train(toy_config(run))
    assert not (run / ckpt.LAST).exists() and not (run / ckpt.STATE).exists()
