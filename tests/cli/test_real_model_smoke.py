"""End-to-end: `gsa train` on rotmnist-mini with the real GSA-Net (tiny budget), then `gsa eval`."""

import json

import pytest

from gsa.cli import main

pytest.importorskip("gsa.models")
pytest.importorskip("gsa.data")


@pytest.mark.slow
def test_real_model_train_eval_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    # the smallest budget that still exercises every stage: 1 step, 4 eval images, 2 angles, 1 invariance image
    args = [
        "train",
        "--recipe",
        "rotmnist",
        "--dataset",
        "rotmnist-mini",
        "--group",
        "p4",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--eval-subset",
        "4",
        "--rotation-step",
        "180",
        "--rotation-subset",
        "2",
        "--invariance-subset",
        "1",
        "--progress",
        "plain",
        "--no-tensorboard",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "44,428 params" in log and "test accuracy" in log
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 1 and report["test_images"] == 4 and report["param_count"] == 44428
    assert report["group"] == "p4" and report["preset"] == "rotmnist"
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "rotation.png", "config.json"):
        assert (out / name).is_file(), name
    # a randomly initialised p4 GSA-Net is invariant to 90-degree rotations of 28x28 inputs
    assert report["invariance"]["max_rel_logit_change"] < 1e-4
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == report["test_accuracy"]
