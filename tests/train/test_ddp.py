"""DDP on CPU with gloo: 2 processes (torchrun) == 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gsa.errors import ConfigError
from gsa.train import checkpoint as ckpt
from gsa.train.distributed import per_process_batch
from gsa.train.engine import train
from gsa.train.testing import toy_config

# no batch norm, no dropout; SGD so that sum-order round-off is not amplified by Adam's normalisation
SETTINGS = dict(epochs=2, batch_size=16, optimizer="sgd", lr=0.05, scheduler="cosine", eval_batch_size=10)


def _cli_args(out):
    args = [
        "train",
        "--dataset",
        "toy",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--progress",
        "plain",
        "--no-tensorboard",
        "--rotation-step",
        "90",
        "--rotation-subset",
        "16",
        "--invariance-subset",
        "8",
    ]
    for k, v in SETTINGS.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, toy):
    single = train(toy_config(tmp_path / "one", **SETTINGS))

    out = tmp_path / "two"
    env = {**os.environ, "GSA_HOOKS": "gsa.train.testing:toy_hooks", "OMP_NUM_THREADS": "1", "CI": "true"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "gsa",
        *_cli_args(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "batch 16, 6 steps/epoch" in proc.stdout
    assert proc.stdout.count("test accuracy") == 1  # rank 0 logs only

    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == single["steps"] == 12
    assert report["test_images"] == single["test_images"] == 48
    a, _ = ckpt.read_weights(tmp_path / "one" / "last.safetensors")
    b, _ = ckpt.read_weights(out / "last.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert report["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1 / 48 + 1e-9)
    state = ckpt.load_state(out / ckpt.STATE)
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def test_batch_must_divide_world_size():
    assert per_process_batch(24, 4) == 6
    with pytest.raises(ConfigError, match="--batch-size 10 is not divisible by the world size 4"):
        per_process_batch(10, 4)
