"""The Trainer's phases, one at a time, on the tiny ToyNet (seconds on a CPU)."""

import copy
import errno
import io
import itertools
import json
import math
import os
import re
import shutil
import sys

import pytest
import torch

from gsa.errors import CheckpointError, ConfigError, DataError, MissingDependencyError
from gsa.train import checkpoint as ckpt
from gsa.train.engine import train
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
    with pytest.raises(DataError, match="the train split has no images"):
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


def _weights_equal(model, expected):
    return all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_a_kill_at_any_step_of_save_last_resumes_to_one_pair(tmp_path, toy, kill_at):
    """Killed just before each file-system step of save_last, the run resumes to the pair of step 6
    or to the new one of step 12, weights and state alike, without a CheckpointError."""
    run, snapshot = tmp_path / "run", tmp_path / "snapshot"
    t = Trainer(toy_config(run, epochs=3))
    t.begin()
    epoch = t.train_epoch()
    t.end_epoch(epoch, t.validate(epoch))  # the pair of step 6
    old, old_pos = {k: v.clone() for k, v in t.model.state_dict().items()}, copy.deepcopy(t.pos)
    t.train_epoch()  # step 12, not saved yet
    shutil.copytree(run, snapshot)
    resumed_to = []
    for at in itertools.count(1):
        shutil.rmtree(run)
        shutil.copytree(snapshot, run)
        with kill_at(at) as dying:
            t.save_last()
        again = Trainer(t.cfg, resume=True)
        again.restore()
        resumed_to.append(again.pos.step)
        assert _weights_equal(again.model, old if again.pos.step == 6 else t.model.state_dict()), dying.killed_at
        assert again.pos == (old_pos if again.pos.step == 6 else t.pos)
        if not dying.dead:
            break
    assert len(resumed_to) >= 10 and resumed_to == sorted(resumed_to) and {resumed_to[0], resumed_to[-1]} == {6, 12}


def test_start_and_resume_remove_what_an_interrupted_save_left(tmp_path, toy):
    run = tmp_path / "run"
    stale = [
        ".last.state.pt.abcd1234.tmp",
        ".last.safetensors.x_y12345.tmp",
        ".config.json.abcdefgh.tmp",
        ".report.json.abcdefgh.tmp",
        "last.next.safetensors",
    ]
    kept = ["notes.txt", ".notes.txt.abcdefgh.tmp", "big.tmp"]
    run.mkdir()
    for name in stale + kept:
        (run / name).write_bytes(b"x" * 100)
    out = io.StringIO()
    t = Trainer(toy_config(run, epochs=1), stream=out)  # a new run in a directory an interrupted first save left
    assert sorted(p.name for p in run.iterdir() if p.name != LOCK_FILE) == sorted(kept)
    assert "removed what an interrupted save left" in out.getvalue() and "last.next.safetensors" in out.getvalue()
    t.run()
    for name in stale:
        (run / name).write_bytes(b"x" * 100)
    again = Trainer(t.cfg, resume=True)
    again.restore()
    assert not any((run / name).exists() for name in stale) and all((run / name).exists() for name in kept)
    assert again.pos.step == 6


def test_a_flipped_bit_in_the_training_state_stops_the_resume(tmp_path, toy):
    run = tmp_path / "run"
    t = Trainer(toy_config(run, epochs=3))
    t.begin()
    epoch = t.train_epoch()
    t.end_epoch(epoch, t.validate(epoch))
    moments = t.optimizer.state_dict()["state"][0]["exp_avg"]
    data = bytearray((run / ckpt.STATE).read_bytes())
    at = bytes(data).find(moments.numpy().tobytes())
    data[at + 2] ^= 0x04  # one bit of an Adam moment
    (run / ckpt.STATE).write_bytes(bytes(data))
    t.close()
    with pytest.raises(
        CheckpointError, match=r"last\.state\.pt: corrupt \(SHA-256 differs from the one in last\.json\)"
    ):
        Trainer(t.cfg, resume=True).restore()


def test_a_run_written_before_manifests_resumes_and_gets_one(tmp_path, toy):
    """Today's format: last.safetensors + last.state.pt without last.json."""
    run = tmp_path / "run"
    t = Trainer(toy_config(run, epochs=2))
    t.begin()
    epoch = t.train_epoch()
    t.end_epoch(epoch, t.validate(epoch))
    (run / ckpt.MANIFEST).unlink()
    t.close()
    assert ckpt.find_last(run) == ckpt.LastPair(run / ckpt.LAST, run / ckpt.STATE)
    again = Trainer(t.cfg, resume=True)
    again.restore()
    assert again.pos == t.pos and _weights_equal(again.model, t.model.state_dict())
    assert again.fit() == "completed"
    assert ckpt.find_last(run).step == 12 and ckpt.load_state(run / ckpt.STATE)["step"] == 12


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
    message = (
        rf"^cannot write .+ in {re.escape(str(run))} \(No space left on device\); the last checkpoint is "
        rf"kept; once fixed, continue with: gsa train --resume {re.escape(str(run))}$"
    )
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


@pytest.mark.parametrize("missing, changes", [("tensorboard", {"tensorboard": True}), ("matplotlib", {})])
def test_a_missing_extra_stops_the_run_before_it_starts(tmp_path, toy, monkeypatch, missing, changes):
    """TensorBoard (when on) and matplotlib (rotation.png) are checked before anything is made."""
    for name in [m for m in sys.modules if m.split(".")[0] == missing] + [missing]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=rf"needs {missing}, .*gsa-nets\[train\]"):
        Trainer(toy_config(tmp_path / "run", **changes))
    assert not (tmp_path / "run").exists()
    Trainer(toy_config(tmp_path / "run", rotation_step=0.0)).close()  # neither is needed


def test_original_input_stats_for_a_dataset_without_them_stop_before_training(tmp_path, toy):
    with pytest.raises(
        ConfigError, match="--input-stats original: the original code had no statistics for dataset 'toy'"
    ):
        train(toy_config(tmp_path / "run", input_stats="original"))
    assert not (tmp_path / "run").exists()
