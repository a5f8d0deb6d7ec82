"""The benchmark's machine facts: CPU flags, the sgemm rate behind the floor column, and ``--load``."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import SIMD_FLAGS, Competitors, cpu_flags, portable, sgemm_rate  # noqa: E402


def test_cpu_flags_lists_known_simd_flags_and_torch_capability():
    flags = cpu_flags()
    assert set(flags["simd"]) <= set(SIMD_FLAGS)
    assert isinstance(flags["torch_capability"], str)


def test_sgemm_rate_is_a_positive_flop_rate_and_restores_threads():
    import torch

    before = torch.get_num_threads()
    rate = sgemm_rate(threads=1, size=64, seconds=0.05)
    assert 1e6 < rate < 1e14
    assert torch.get_num_threads() == before


def test_competitors_run_for_the_duration_and_are_killed_after():
    with Competitors(2) as load:
        assert load.alive() == 2
        procs = list(load.procs)
    assert all(p.poll() is not None for p in procs)


def test_competitors_are_killed_when_the_body_raises():
    with pytest.raises(RuntimeError):
        with Competitors(1) as load:
            procs = list(load.procs)
            raise RuntimeError("case failed")
    assert all(p.poll() is not None for p in procs)


def test_negative_load_is_a_clear_error():
    with pytest.raises(ValueError, match="competitor processes >= 0"):
        Competitors(-1)
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--load", "-1", "--impl", "fast"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode != 0 and "competitor processes >= 0" in p.stderr


def test_portable_drops_the_working_directory_and_writes_home_as_tilde(monkeypatch, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    text = f"native kernels: {home}/.cache/gsa/k.so; --out {work}/benchmarks/reference"
    assert portable(text) == "native kernels: ~/.cache/gsa/k.so; --out benchmarks/reference"
    assert portable("no paths here") == "no paths here"
