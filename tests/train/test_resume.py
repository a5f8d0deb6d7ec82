"""--resume with changed settings: each TrainConfig field honoured, refused or irrelevant (gsa.train.resume)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from gsa.errors import ConfigError
from gsa.train.config import TrainConfig, make_config
from gsa.train.engine import train
from gsa.train.metrics import read_csv
from gsa.train.optim import build_optimizer, build_scheduler
from gsa.train.resume import HONOURED, IRRELEVANT, REFUSED, RULES, apply_settings, check_settings
from gsa.train.schedule import LRSchedule
from gsa.train.state import Position
from gsa.train.testing import toy_config
from gsa.train.trainer import Trainer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


# --------------------------------------------------------------------------- the table
def test_every_config_field_has_a_rule():
    assert set(RULES) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert {r.kind for r in RULES.values()} == {HONOURED, REFUSED, IRRELEVANT}
    assert all(r.why for r in RULES.values())


def test_the_docs_table_names_every_setting_a_flag_can_change():
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Resuming with changed settings") : text.index("## `gsa eval`")]
    flags = {"normalize": "--no-normalize", "tensorboard": "--no-tensorboard", "model_args": "--model-arg"}
    for name in set(RULES) - {"recipe", "out", "extra"}:
        flag = flags.get(name, "--" + name.replace("_", "-"))
        assert re.search(rf"`{re.escape(flag)}`", section), flag


# --------------------------------------------------------------------------- check_settings
def _cfg(**overrides):
    return toy_config("run", **overrides)


def test_unchanged_and_honoured_settings_pass_and_are_returned():
    old = _cfg()
    assert check_settings(old, _cfg()) == {}
    assert check_settings(old, toy_config("elsewhere")) == {}  # the run directory is the one resumed
    changed = check_settings(old.to_dict(), _cfg(lr=0.05, epochs=4, progress="plain", workers=1))
    assert changed == {"lr": (0.01, 0.05), "epochs": (2, 4), "progress": ("none", "plain"), "workers": (0, 1)}
    assert check_settings(None, _cfg(optimizer="sgd")) == {}  # nothing recorded: nothing to compare
    tuples = _cfg(model_args={"block_sizes": (1, 1)})  # as recorded in last.state.pt by the API
    assert check_settings(tuples, TrainConfig.from_dict(json.loads(json.dumps(tuples.to_dict())))) == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimizer": "sgd"}, "--optimizer recorded 'adam', requested 'sgd' (the optimizer's state"),
        ({"batch_size": 8}, "--batch-size recorded 16, requested 8 (the position in the epoch"),
        ({"group": "p8"}, "--group recorded 'p4', requested 'p8' (the weights belong to the recorded network)"),
        ({"patch_size": None}, "--patch-size recorded 3, requested None"),
        ({"seed": 1}, "--seed recorded 0, requested 1"),
        ({"train_subset": 50}, "--train-subset recorded 7000, requested 50"),
        ({"dataset": "rotmnist-mini"}, "--dataset recorded 'toy', requested 'rotmnist-mini'"),
        (
            {"model_args": {"channels": 16, "num_heads": 2, "lifting_heads": 8}},
            "--model-arg channels recorded 24, requested 16",
        ),
        ({"eval_subset": 10}, "--eval-subset change the validation images from all to 10"),
    ],
)
def test_refused_changes_name_the_setting_both_values_and_the_reason(change, message):
    with pytest.raises(ConfigError) as info:
        check_settings(_cfg(), _cfg(**change))
    text = str(info.value)
    assert text.startswith("cannot resume with changed settings: ") and message in text and "\n" not in text
    assert text.endswith("resume with the recorded values or start a new run")


def test_all_refused_changes_are_named_at_once():
    with pytest.raises(ConfigError, match=r"--batch-size recorded 16, requested 8 .*; --optimizer recorded 'adam'"):
        check_settings(_cfg(), _cfg(batch_size=8, optimizer="sgd"))


def test_validation_settings_are_honoured_while_the_validation_images_stay_the_same():
    assert check_settings(_cfg(), _cfg(eval_batch_size=8)) == {"eval_batch_size": (None, 8)}
    capped = _cfg(max_eval_batches=2)  # 2 batches: the batch size decides how many images
    with pytest.raises(ConfigError, match="--eval-batch-size change the validation images from 200 to 16"):
        check_settings(capped, _cfg(max_eval_batches=2, eval_batch_size=8))


def test_model_args_that_change_no_weights_are_honoured():
    old = _cfg(model_args={"value_dropout": 0.0})
    assert check_settings(old, _cfg(model_args={"value_dropout": 0.2, "backend": "reference"}))["model_args"]


def test_fewer_epochs_than_the_run_has_started_are_refused():
    old = _cfg(epochs=3)
    assert check_settings(old, _cfg(epochs=2), Position(epoch=2, batch=0)) == {"epochs": (3, 2)}
    with pytest.raises(ConfigError, match=r"--epochs 2 is fewer than the 3 epoch\(s\) the run has already started"):
        check_settings(old, _cfg(epochs=2), Position(epoch=2, batch=4))


# --------------------------------------------------------------------------- apply_settings
def _recorded_optimization(cfg, steps):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, 6)
    for _ in range(steps):
        opt.step()
        sched.step()
    return model, opt.state_dict(), sched.state_dict()


def _resumed(cfg, model, opt_state, sched_state):
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, 6)
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    apply_settings(cfg, opt, sched, 6)
    return opt, sched


def test_apply_settings_extends_the_cosine_horizon_and_keeps_an_unchanged_run_exact():
    old = make_config("mini", lr=1.0, epochs=2, scheduler="cosine", warmup_epochs=0.5)
    model, opt_state, sched_state = _recorded_optimization(old, 12)  # the whole run: the lr reached 0
    opt, _ = _resumed(old, model, opt_state, sched_state)
    assert opt.param_groups[0]["lr"] == opt_state["param_groups"][0]["lr"] == 0.0
    opt, sched = _resumed(dataclasses.replace(old, epochs=4), model, opt_state, sched_state)
    assert opt.param_groups[0]["lr"] == pytest.approx(LRSchedule("cosine", total=24, warmup=3)(12)) != 0.0
    assert sched.state_dict()["lr_lambdas"] == [{"kind": "cosine", "total": 24, "warmup": 3}]  # saved with it
    sched.optimizer.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(LRSchedule("cosine", total=24, warmup=3)(13))


def test_apply_settings_sets_lr_weight_decay_and_momentum():
    old = make_config("mini", optimizer="sgd", lr=0.1, epochs=2, scheduler="constant", warmup_epochs=0.0)
    model, opt_state, sched_state = _recorded_optimization(old, 3)
    new = dataclasses.replace(old, lr=0.02, weight_decay=0.5, momentum=0.5)
    opt, sched = _resumed(new, model, opt_state, sched_state)
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (0.02, 0.5, 0.5)
    assert sched.get_last_lr() == [0.02] and sched.last_epoch == 3


# --------------------------------------------------------------------------- real resumed runs
def test_resume_with_more_epochs_follows_the_new_horizon(tmp_path, toy):
    kw = dict(scheduler="cosine", warmup_epochs=0.5)
    train(toy_config(tmp_path / "ref", epochs=4, **kw))
    run = tmp_path / "run"
    train(toy_config(run, epochs=2, **kw))
    assert float(read_csv(run / "metrics.csv")[-1]["lr"]) == 0.0  # the 2-epoch cosine ended
    train(dataclasses.replace(TrainConfig.load(run), epochs=4), resume=True)
    rows, ref = read_csv(run / "metrics.csv"), read_csv(tmp_path / "ref" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [6, 12, 18, 24]
    lrs = [float(r["lr"]) for r in rows[2:]]
    assert lrs == pytest.approx([float(r["lr"]) for r in ref[2:]]) and lrs[0] > 0.1 * 0.01 and lrs[1] == 0.0


def test_resume_honours_a_new_lr_and_weight_decay(tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(run, max_steps=6, scheduler="constant"))  # one epoch of two
    cfg = dataclasses.replace(TrainConfig.load(run), max_steps=None, lr=0.05, weight_decay=0.01)
    trainer = Trainer(cfg, resume=True)
    trainer.restore()
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 0.01)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimizer": "sgd"}, "--optimizer recorded 'adam', requested 'sgd'"),
        ({"batch_size": 8}, "--batch-size recorded 16, requested 8"),
    ],
)
def test_resume_refuses_a_new_optimizer_or_batch_size_mid_epoch(tmp_path, toy, change, message):
    run = tmp_path / "run"
    train(toy_config(run, max_steps=3))  # stopped in the middle of epoch 1
    before = (run / "last.state.pt").read_bytes()
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(dataclasses.replace(TrainConfig.load(run), max_steps=None, **change), resume=True)
    assert (run / "last.state.pt").read_bytes() == before


def test_switching_from_sgd_to_adam_is_refused_naming_both(tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(run, optimizer="sgd", max_steps=3))
    with pytest.raises(ConfigError, match="--optimizer recorded 'sgd', requested 'adam'"):
        train(dataclasses.replace(TrainConfig.load(run), max_steps=None, optimizer="adam"), resume=True)
