"""Setting a run up: run directory checks, data and model."""

import dataclasses
import datetime as _dt
import os
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from gsa.errors import ConfigError, DataError
from gsa.train import build
from gsa.train import checkpoint as ckpt
from gsa.train.build import build_model, claim_run_dir, default_run_dir, load_data, to_device_if_small
from gsa.train.distributed import DistInfo
from gsa.train.rundir import RunLock
from gsa.train.testing import toy_config

ONE = DistInfo()


def test_claim_run_dir(tmp_path):
    run = tmp_path / "run"
    assert claim_run_dir(toy_config(run), False, ONE) == run
    assert not run.exists()  # nothing is created here
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        claim_run_dir(toy_config(run), True, ONE)
    run.mkdir()
    (run / ckpt.STATE).write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run_dir(toy_config(run), False, ONE)
    with pytest.raises(ConfigError, match="--resume needs the run directory"):
        claim_run_dir(dataclasses.replace(toy_config(run), out=None), True, ONE)


def test_claim_run_dir_sees_a_pair_by_its_manifest(tmp_path):
    """Between the switch and the renames of a save, last.json names last.next.*; the run is resumable."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.MANIFEST).write_text("{}")
    (run / ckpt.NEXT[ckpt.LAST]).write_bytes(b"")
    (run / ckpt.NEXT[ckpt.STATE]).write_bytes(b"")
    assert claim_run_dir(toy_config(run), True, ONE) == run
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run_dir(toy_config(run), False, ONE)


def test_claim_run_dir_refuses_another_runs_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert claim_run_dir(toy_config(run), False, ONE) == run  # an empty directory is fine
    (run / "config.json").write_text("{}")
    (run / ckpt.BEST).write_bytes(b"weights")
    with pytest.raises(
        ConfigError,
        match=rf"{run} holds another run's files \(config.json, best.safetensors\) but "
        r"no checkpoint to resume; choose another --out",
    ):
        claim_run_dir(toy_config(run), False, ONE)


def test_claim_run_dir_creates_and_locks(tmp_path):
    run = tmp_path / "a" / "run"
    lock = RunLock()
    assert claim_run_dir(toy_config(run), False, ONE, lock=lock) == run
    assert run.is_dir() and lock.held
    with pytest.raises(ConfigError, match=rf"{run} is in use by another gsa run \(pid {os.getpid()} on "):
        claim_run_dir(toy_config(run), False, ONE, lock=RunLock())
    lock.release()


def test_default_names_started_in_the_same_second_differ(tmp_path, monkeypatch):
    class Frozen(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(build, "_dt", types.SimpleNamespace(datetime=Frozen))
    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(toy_config("x"), out=None)
    locks = [RunLock(), RunLock()]
    first, second = (claim_run_dir(cfg, False, ONE, lock=lock) for lock in locks)
    assert first == default_run_dir(cfg) and second == first.with_name(first.name + "-2")
    assert first.is_dir() and second.is_dir() and all(lock.held for lock in locks)
    for lock in locks:
        lock.release()


def test_default_run_dir_names_the_run():
    cfg = toy_config("x")
    path = default_run_dir(cfg)
    assert path.parent.name == "runs" and path.name.startswith(f"{cfg.recipe}-toy-{cfg.group}-")


@pytest.mark.parametrize(
    "spec, part",
    [
        ("folder:/a/b", "folder-b"),
        ("folder:/a/b/", "folder-b"),
        ("npz:x.npz", "npz-x"),
        ("npz:C:\\my data\\set.v2.npz", "npz-set.v2"),
    ],
)
def test_default_run_dir_is_one_safe_name_for_any_dataset_spec(tmp_path, monkeypatch, spec, part):
    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(toy_config("x"), dataset=spec, out=None)
    path = default_run_dir(cfg)
    assert path.parent == Path("runs") and path.name.startswith(f"{cfg.recipe}-{part}-{cfg.group}-")
    assert ":" not in path.name and "\\" not in path.name and " " not in path.name
    lock = RunLock()
    assert claim_run_dir(cfg, False, ONE, lock=lock) == path and path.is_dir()  # one new folder
    lock.release()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [path.name]


def test_load_data_subsets_train_and_stacks_small_splits(toy):
    spec, datasets, tensors = load_data(toy_config("x", train_subset=32), toy)
    assert spec.name == "toy" and set(datasets) == {"train", "valid", "test"}
    assert isinstance(datasets["train"], Subset) and len(tensors["train"][0]) == 32
    _, _, lazy = load_data(toy_config("x", loader="dataloader"), toy)
    assert lazy == {"train": None, "valid": None, "test": None}


def test_load_data_refuses_labels_outside_the_classes(toy):
    from torch.utils.data import TensorDataset

    def dataset_fn(cfg, split):
        ds = toy.dataset_fn(cfg, split)
        x, y = ds.tensors
        return TensorDataset(x, torch.where(torch.arange(len(y)) == 5, torch.tensor(7), y))  # 3 classes

    with pytest.raises(DataError, match="the train split has label 7, outside the 3 classes 0..2"):
        load_data(toy_config("x"), toy.replace(dataset_fn=dataset_fn))


def test_load_data_refuses_an_empty_split(toy):
    def dataset_fn(cfg, split):
        ds = toy.dataset_fn(cfg, split)
        return Subset(ds, range(0)) if split == "test" else ds

    with pytest.raises(DataError, match="the test split has no images"):
        load_data(toy_config("x"), toy.replace(dataset_fn=dataset_fn))


def test_build_model_checks_the_factory(toy):
    cfg = toy_config("x")
    spec = toy.info_fn("toy")
    assert isinstance(build_model(cfg, spec, toy, torch.device("cpu")), torch.nn.Module)
    with pytest.raises(ConfigError, match="model factory returned str, not an nn.Module"):
        build_model(cfg, spec, toy.replace(model_fn=lambda cfg, spec: "model"), torch.device("cpu"))


def test_to_device_if_small():
    pair = (torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    assert to_device_if_small(None, torch.device("cpu")) is None
    assert to_device_if_small(pair, torch.device("cpu"), max_bytes=8) is pair
    x, y = to_device_if_small(pair, torch.device("cpu"))
    assert torch.equal(x, pair[0]) and torch.equal(y, pair[1])
