"""The Trainer's phases, one at a time, on the tiny ToyNet (seconds on a CPU)."""

import errno
import io
import json
import math
import os
import re

import pytest
import torch

from gsa.train import checkpoint as ckpt
from gsa.train.engine import train
from gsa.errors import CheckpointError, ConfigError
from gsa.train.metrics import read_csv
from gsa.train.rundir import LOCK_FILE
from gsa.train.state import Position
from gsa.train.testing import toy_config
from gsa.train.trainer import Trainer


def test_construction_sets_the_run_up(tmp_path, toy):
    run = tmp_path / "run"
    t = Trainer(toy_config(run, max_steps=None))
    assert t.run_dir == run and run.is_dir() and t.cfg.out == str(run)
    assert t.device == torch.device("cpu") and not t.dist.enabled and t.net is t.model
    assert t.steps_per_epoch == 6 and t.max_steps == math.inf
    assert t.pos == Position() and t.best_weights is None and t.csv_log is None
    assert t.n_params == sum(p.numel() for p in t.model.parameters())
    assert [p.name for p in run.iterdir()] == [LOCK_FILE]  # nothing written before begin()/fit()
    t.close()
    assert [p.name for p in run.iterdir()] == []


def test_construction_errors(tmp_path, toy):
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        Trainer(toy_config(tmp_path / "r"), resume=True)
    with pytest.raises(ConfigError, match="has an empty train split"):
        Trainer(toy_config(tmp_path / "r", train_subset=None), hooks=toy.replace(dataset_fn=lambda cfg, split: []))
    assert not (tmp_path / "r").exists()  # a failed set-up removes the directory it made


def test_phases_reproduce_train(tmp_path, toy):
    ref = train(toy_config(tmp_path / "ref"))
    out = io.StringIO()
    t = Trainer(toy_config(tmp_path / "run", progress="plain"), stream=out)
    t.begin()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["out"] == str(tmp_path / "run")
    assert t.fit() == "completed"
    assert t.pos.epoch == 2 and t.pos.step == 12 and len(t.pos.epoch_seconds) == 2
    assert len(read_csv(tmp_path / "run" / "metrics.csv")) == 2
    test = t.test()
    assert test.count == 48 and test.accuracy == ref["test_accuracy"]
    report = t.final_report(test, "completed")
    assert report["steps"] == 12 and report["test_accuracy"] == ref["test_accuracy"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["best_epoch"] == ref["best_epoch"]
    assert "test accuracy" in out.getvalue() and out.getvalue().startswith("gsa train: recipe mini")


def test_one_epoch_by_hand_then_restore(tmp_path, toy):
    run = tmp_path / "run"
    t = Trainer(toy_config(run, epochs=3))
    t.begin()
    epoch = t.train_epoch()
    assert epoch.index == 0 and not epoch.capped and t.pos.step == 6 and epoch.images == 96
    valid = t.validate(epoch)
    assert valid.count == 32
    t.end_epoch(epoch, valid)  # saves best.* and last.*
    assert t.pos.epoch == 1 and t.pos.batch == 0 and t.pos.best_epoch == 1
    assert ckpt.load_state(run / ckpt.STATE)["step"] == 6 and (run / ckpt.BEST).is_file()
    t.close()  # releases the run directory for the next Trainer

    again = Trainer(t.cfg, resume=True)
    again.restore()
    assert again.pos == t.pos
    assert again.scheduler.state_dict() == t.scheduler.state_dict()
    for k, v in t.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v)
    assert again.best_weights.keys() == t.best_weights.keys()


def test_max_steps_caps_inside_an_epoch(tmp_path, toy):
    t = Trainer(toy_config(tmp_path / "run", max_steps=4))
    t.begin()
    assert t.fit() == "max_steps"
    assert t.pos.step == 4 and t.pos.epoch == 0 and t.pos.batch == 4 and t.pos.epoch_seconds == []


def test_a_running_run_cannot_be_resumed_or_reused(tmp_path, toy):
    run = tmp_path / "run"
    t = Trainer(toy_config(run, epochs=3))
    t.begin()
    epoch = t.train_epoch()
    t.end_epoch(epoch, t.validate(epoch))  # a resumable checkpoint: only the lock stands in the way
    in_use = rf"^{re.escape(str(run))} is in use by another gsa run \(pid {os.getpid()} on .+\); wait for it to finish"
    with pytest.raises(ConfigError, match=in_use):
        Trainer(t.cfg, resume=True)
    with pytest.raises(ConfigError, match=in_use):
        train(toy_config(run))
    assert ckpt.load_state(run / ckpt.STATE)["step"] == 6 and len(read_csv(run / "metrics.csv")) == 1
    t.close()
    with Trainer(t.cfg, resume=True) as again:
        again.restore()
        assert again.pos == t.pos


@pytest.mark.parametrize("where", ["epoch", "checkpoint"])
def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, toy, monkeypatch, where):
    """ENOSPC from the first write of the epoch's files, or from the checkpoint's: a one-line error,
    no temporary files, and the last checkpoint as it was (resumable)."""
    run = tmp_path / "run"
    t = Trainer(toy_config(run, epochs=3))
    t.begin()
    epoch = t.train_epoch()
    t.end_epoch(epoch, t.validate(epoch))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    full, real_fsync = [], os.fsync

    def fsync(fd):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if where == "checkpoint":  # best.safetensors and metrics.csv are written, then the disk is full
        save_last = t.save_last
        monkeypatch.setattr(t, "save_last", lambda: (full.append(True), save_last()))
    else:
        full.append(True)
    epoch = t.train_epoch()
    valid = t.validate(epoch)
    message = (rf"^cannot write .+ in {re.escape(str(run))} \(No space left on device\); the last checkpoint is "
               rf"kept; once fixed, continue with: gsa train --resume {re.escape(str(run))}$")
    with pytest.raises(CheckpointError, match=message):
        t.end_epoch(epoch, valid)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert all((run / name).read_bytes() == before[name] for name in (ckpt.STATE, ckpt.LAST))
    if where == "epoch":
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # metrics.csv too
    full.clear()
    t.close()
    with Trainer(t.cfg, resume=True) as again:
        again.restore()
        assert again.pos.step == 6 and again.pos.epoch == 1
