import os

import pytest
import torch
from torch import nn

from gsa.train import checkpoint as ckpt
from gsa.errors import CheckpointError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_weights_round_trip_with_metadata(tmp_path):
    m = _model()
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, m, {"step": 7})
    other = _model(seed=1)
    meta = ckpt.load_weights(path, other)
    assert meta["step"] == "7" and meta["format"] == ckpt.FORMAT
    for a, b in zip(m.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp files left


def test_truncated_weights_name_the_file(tmp_path):
    path = tmp_path / "best.safetensors"
    ckpt.save_weights(path, _model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"best\.safetensors: truncated or corrupt checkpoint"):
        ckpt.load_weights(path, _model())


def test_flipped_byte_is_caught_by_checksum(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, _model())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data, header still valid
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.read_weights(path)


def test_wrong_architecture_is_reported(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, _model())
    with pytest.raises(CheckpointError, match="does not match the model"):
        ckpt.load_weights(path, nn.Linear(4, 5))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.read_weights(tmp_path / "nope.safetensors")


def test_state_round_trip_and_corruption(tmp_path):
    path = tmp_path / "last.state.pt"
    opt = torch.optim.Adam(_model().parameters())
    ckpt.save_state(path, {"step": 3, "optimizer": opt.state_dict(), "rng": torch.get_rng_state()})
    assert ckpt.load_state(path)["step"] == 3
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"last\.state\.pt: truncated or corrupt training state"):
        ckpt.load_state(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    ckpt.atomic_write_bytes(path, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_resolve_weights(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.resolve_weights(tmp_path)
    ckpt.save_weights(tmp_path / "best.safetensors", _model())
    assert ckpt.resolve_weights(tmp_path).name == "best.safetensors"
