import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from gsa.errors import CheckpointError
from gsa.train import checkpoint as ckpt


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


# ---------------------------------------------------------------------- the last pair


def _generation(step):
    """The model and training state of generation ``step`` (distinct weights and moments per step)."""
    return _model(seed=step), {"step": step, "moments": torch.full((256,), float(step))}


def _save_generation(run, step, legacy=False):
    model, state = _generation(step)
    if legacy:  # how runs were written before last.json: two separate atomic files
        ckpt.save_state(run / ckpt.STATE, state)
        ckpt.save_weights(run / ckpt.LAST, model, {"step": step})
    else:
        ckpt.save_last(run, model, {"step": step}, state)


def _resumable_step(run):
    """What ``--resume`` reads (never writes): the current pair, verified; weights step == state step."""
    pair = ckpt.find_last(run)
    state = ckpt.load_state(pair.state, sha256=pair.state_sha256)
    model = _model(seed=99)
    meta = ckpt.load_weights(pair.weights, model)
    step = state["step"]
    assert int(meta["step"]) == step and pair.step in (None, step)
    expected_model, expected_state = _generation(step)
    assert torch.equal(state["moments"], expected_state["moments"])
    for a, b in zip(model.state_dict().values(), expected_model.state_dict().values()):
        assert torch.equal(a, b)
    return step


def test_save_last_writes_the_pair_and_its_manifest(tmp_path):
    _save_generation(tmp_path, 1)
    _save_generation(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.MANIFEST, ckpt.LAST, ckpt.STATE]
    manifest = json.loads((tmp_path / ckpt.MANIFEST).read_text())
    assert manifest["format"] == ckpt.MANIFEST_FORMAT and manifest["step"] == 2
    pair = ckpt.find_last(tmp_path)
    assert (pair.weights, pair.state, pair.step) == (tmp_path / ckpt.LAST, tmp_path / ckpt.STATE, 2)
    assert pair.state_sha256 == manifest["files"][ckpt.STATE] and _resumable_step(tmp_path) == 2
    assert ckpt.load_weights(tmp_path / ckpt.LAST, _model())["step"] == "2"  # last.safetensors: the last weights


def _survives_a_kill_while_cleaning(run, kill_at):
    """clean_run_dir (at a start or resume) killed at each of its steps keeps the same pair; a full
    one leaves just the pair and its manifest, and the next save works."""
    step = _resumable_step(run)
    for at in itertools.count(1):
        copy = run.with_name(f"{run.name}-clean{at}")
        shutil.copytree(run, copy)
        with kill_at(at) as dying:
            ckpt.clean_run_dir(copy)
        assert _resumable_step(copy) == step, dying.killed_at
        if not dying.dead:
            break
    ckpt.clean_run_dir(run)
    assert _resumable_step(run) == step
    assert {ckpt.LAST, ckpt.STATE} <= {p.name for p in run.iterdir()} <= {ckpt.LAST, ckpt.STATE, ckpt.MANIFEST}
    _save_generation(run, 3)
    assert _resumable_step(run) == 3


@pytest.mark.parametrize("previous", ["manifest", "legacy"])
def test_a_kill_at_any_step_of_save_last_leaves_a_resumable_pair(tmp_path, kill_at, previous):
    """SIGKILL just before each fsync, rename and removal of a save (so at every instant: the state
    on disk between two steps is the same): the run resumes to the previous or the new pair, never
    to a mix and never with a CheckpointError; then cleaning up (also killed at each step) works."""
    resumed_to = []
    for at in itertools.count(1):
        run = tmp_path / f"kill{at}"
        run.mkdir()
        _save_generation(run, 1, legacy=previous == "legacy")
        with kill_at(at) as dying:
            _save_generation(run, 2)
        resumed_to.append(_resumable_step(run))
        assert ckpt.resolve_weights(run, "last") == ckpt.find_last(run).weights
        _survives_a_kill_while_cleaning(run, kill_at)
        if not dying.dead:
            break
    assert len(resumed_to) >= 10  # 3 writes x (fsync, replace, directory fsync), 2 renames, ...
    assert resumed_to == sorted(resumed_to) and resumed_to[0] == 1 and resumed_to[-1] == 2


_EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[3])
    import test_checkpoint as t
    from gsa.train import checkpoint as ckpt

    run, stop_before = t.Path(sys.argv[1]), sys.argv[2]

    class ExitingOs:
        def __getattr__(self, name):
            if name != "replace":
                return getattr(os, name)
            def replace(src, dst):
                if t.Path(dst).name == stop_before:
                    os._exit(9)  # no clean-up, no flush: like SIGKILL
                os.replace(src, dst)
            return replace

    t._save_generation(run, 1)
    ckpt.os = ExitingOs()
    t._save_generation(run, 2)
    """
)


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize("stop_before, step", [(ckpt.MANIFEST, 1), (ckpt.STATE, 2)])
def test_a_real_exit_in_save_last_leaves_a_resumable_pair(tmp_path, stop_before, step):
    """A process that really exits (os._exit) before the switch, or between the two renames after it."""
    src = str(Path(ckpt.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(tmp_path), stop_before, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    assert _resumable_step(tmp_path) == step
    removed = ckpt.clean_run_dir(tmp_path)
    if step == 1:  # the new pair was incomplete (and the manifest's temporary still there): both removed
        assert removed[:2] == list(ckpt.NEXT.values()) and removed[2].startswith(f".{ckpt.MANIFEST}.")
    else:  # the state was still to be moved into place: moved, nothing removed
        assert removed == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.MANIFEST, ckpt.LAST, ckpt.STATE]
    assert _resumable_step(tmp_path) == step


def _flip_byte_of(path, tensor):
    data = bytearray(path.read_bytes())
    at = bytes(data).find(tensor.numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0x10  # one bit of the tensor's data: torch.load alone accepts it
    path.write_bytes(bytes(data))


def test_flipped_bit_in_the_training_state_is_caught(tmp_path):
    _save_generation(tmp_path, 3)
    path = tmp_path / ckpt.STATE
    _flip_byte_of(path, _generation(3)[1]["moments"])
    assert ckpt.load_state(path)["moments"][1] != 3.0  # unchecked, it loads silently
    with pytest.raises(CheckpointError, match=r"last\.state\.pt: corrupt \(SHA-256 differs") as info:
        ckpt.find_last(tmp_path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    sha = json.loads((tmp_path / ckpt.MANIFEST).read_text())["files"][ckpt.STATE]
    with pytest.raises(CheckpointError, match=r"last\.state\.pt: corrupt training state \(SHA-256 differs"):
        ckpt.load_state(path, sha256=sha)


def test_corrupt_or_missing_files_of_the_pair_name_the_file(tmp_path):
    _save_generation(tmp_path, 1)
    os.unlink(tmp_path / ckpt.LAST)
    with pytest.raises(CheckpointError, match=r"last\.safetensors: missing"):
        ckpt.find_last(tmp_path)
    (tmp_path / ckpt.MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"last\.json: corrupt checkpoint manifest"):
        ckpt.find_last(tmp_path)
    assert ckpt.has_last(tmp_path)  # resume is offered, and then reports the manifest


def test_clean_run_dir_removes_only_our_temporaries(tmp_path):
    _save_generation(tmp_path, 1)
    ours = [
        ".last.safetensors.k3_9abcd.tmp",
        ".last.state.pt.0123abcd.tmp",
        ".last.json.zzzzzzzz.tmp",
        ".best.safetensors.abcdefgh.tmp",
        ".config.json.abcdefgh.tmp",
        ".last.next.safetensors.abcdefgh.tmp",
        ckpt.NEXT[ckpt.LAST],
    ]  # last.next.*: an incomplete pair (last.json does not name it)
    others = [
        "notes.tmp",
        ".notes.txt.abcdefgh.tmp",
        ".last.safetensors.tmp",
        ".last.safetensors.ABCDEFGH.tmp",
        "last.safetensors.abcdefgh.tmp",
        "metrics.csv",
    ]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"partial")
    assert sorted(ckpt.clean_run_dir(tmp_path, also=["config.json"])) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + [ckpt.MANIFEST, ckpt.LAST, ckpt.STATE])
    assert _resumable_step(tmp_path) == 1
    assert ckpt.clean_run_dir(tmp_path / "not-yet-created") == []


def test_resolve_weights_last_is_the_current_pair(tmp_path):
    with pytest.raises(CheckpointError, match=r"last\.safetensors: checkpoint not found"):
        ckpt.resolve_weights(tmp_path, "last")
    _save_generation(tmp_path, 1)
    assert ckpt.resolve_weights(tmp_path, "last") == tmp_path / ckpt.LAST
    (tmp_path / ckpt.NEXT[ckpt.LAST]).write_bytes((tmp_path / ckpt.LAST).read_bytes())
    (tmp_path / ckpt.LAST).write_bytes(b"the previous pair")  # as between the switch and the renames
    assert ckpt.resolve_weights(tmp_path, "last") == tmp_path / ckpt.NEXT[ckpt.LAST]
