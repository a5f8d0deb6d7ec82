"""The run directory: created atomically, locked while a run lives, checked for other runs' files."""

import os
import socket

import pytest

from gsa.errors import ConfigError
from gsa.train.distributed import DistInfo
from gsa.train.rundir import LOCK_FILE, RunLock, claim, make_run_dir, other_run_files


def test_a_fresh_name_is_claimed_atomically(tmp_path):
    base = tmp_path / "runs" / "mini-toy-p4-20260101-120000"
    assert make_run_dir(base, fresh=True) == (base, True)  # parents are made too
    second, created = make_run_dir(base, fresh=True)  # a run started in the same second
    assert created and second == base.with_name(base.name + "-2") and second.is_dir()
    assert make_run_dir(base, fresh=True)[0].name.endswith("-3")
    assert make_run_dir(base, fresh=False) == (base, False)  # --out: an existing directory is fine


def test_an_unusable_out_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=f"--out {afile} is a file, not a directory; choose another --out"):
        make_run_dir(afile, fresh=False)
    with pytest.raises(ConfigError, match=rf"cannot create the run directory {afile / 'run'} \(.*\); choose another"):
        make_run_dir(afile / "run", fresh=False)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_read_only_directory_is_one_line(read_only_dir):
    ro = read_only_dir
    with pytest.raises(ConfigError, match=rf"cannot create the run directory {ro / 'run'} \(Permission denied\)"):
        make_run_dir(ro / "run", fresh=False)
    with pytest.raises(ConfigError, match=rf"cannot write to the run directory {ro} \(Permission denied\)"):
        RunLock().acquire(ro)


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    held = RunLock().acquire(tmp_path)
    assert held.held and (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    other = RunLock()
    with pytest.raises(ConfigError) as info:
        other.acquire(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is in use by another gsa run (pid {os.getpid()} on "
        f"{socket.gethostname()}); wait for it to finish or choose another --out"
    )
    assert not other.held
    held.release()
    held.release()  # idempotent
    assert not held.held and not (tmp_path / LOCK_FILE).exists()
    other.acquire(tmp_path).release()


def test_a_failed_set_up_removes_only_a_directory_it_created(tmp_path):
    made = RunLock()
    assert claim(tmp_path / "made", made, fresh=False, resume=False, dist=DistInfo()) == tmp_path / "made"
    assert made.held and made.created_dir
    made.release(remove_empty_dir=True)
    assert not (tmp_path / "made").exists()
    kept = RunLock()
    claim(tmp_path, kept, fresh=False, resume=False, dist=DistInfo())
    kept.release(remove_empty_dir=True)
    assert tmp_path.is_dir()


def test_resuming_a_missing_directory_creates_nothing(tmp_path):
    lock = RunLock()
    assert claim(tmp_path / "gone", lock, fresh=False, resume=True, dist=DistInfo()) == tmp_path / "gone"
    assert not (tmp_path / "gone").exists() and not lock.held


def test_other_run_files(tmp_path):
    assert other_run_files(tmp_path / "missing") == []
    (tmp_path / LOCK_FILE).write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert other_run_files(tmp_path) == []  # a lock file and foreign files are not a run's
    (tmp_path / "metrics.csv").write_text("")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tb").mkdir()
    assert other_run_files(tmp_path) == ["config.json", "metrics.csv", "tb"]


def test_name_part_is_safe_and_never_empty():
    from gsa.train.rundir import name_part

    assert name_part("rotmnist-mini") == "rotmnist-mini" and name_part("folder:~/imgs") == "folder-imgs"
    assert name_part("..") == "data" and name_part("a/b:c d") == "a-b-c-d" and len(name_part("x" * 99)) == 40
