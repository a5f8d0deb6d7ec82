"""report.json assembly: the sections are functions of plain values."""

import dataclasses
import math
import sys

import pytest
import torch

from gsa.errors import MissingDependencyError
from gsa.train import reporting as R
from gsa.train.config import make_config
from gsa.train.metrics import Meter

REPORT_KEYS = [
    "test_accuracy",
    "test_loss",
    "test_images",
    "best_valid_accuracy",
    "best_epoch",
    "best_step",
    "epochs_completed",
    "steps",
    "steps_per_epoch",
    "stopped",
    "amp_skipped_steps",
    "seconds_per_epoch",
    "seconds_per_epoch_extrapolated",
    "train_seconds",
    "images_per_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "device",
    "device_name",
    "world_size",
    "precision",
    "torch_version",
    "param_count",
    "preset",
    "group",
    "patch_size",
    "dataset",
    "recipe",
    "eval",
    "rotation",
    "invariance",
    "git_commit",
    "finished_at",
]


def _position(**changes):
    pos = dict(
        epoch=2,
        batch=0,
        step=12,
        best_acc=0.75,
        best_epoch=2,
        best_step=12,
        skipped_steps=1,
        train_seconds=3.0,
        train_images=192.0,
        epoch_seconds=[1.0, 2.0],
        meter={},
        epoch_elapsed=0.0,
    )
    pos.update(changes)
    return pos


def test_summarize_progress_maps_missing_best_to_none():
    out = R.summarize_progress(_position(), 6, "completed")
    assert out == {
        "best_valid_accuracy": 0.75,
        "best_epoch": 2,
        "best_step": 12,
        "epochs_completed": 2,
        "steps": 12,
        "steps_per_epoch": 6,
        "stopped": "completed",
        "amp_skipped_steps": 1,
    }
    none = R.summarize_progress(_position(best_acc=-1.0, best_epoch=-1, best_step=-1), 6, "max_steps")
    assert none["best_valid_accuracy"] is None and none["best_epoch"] is None and none["best_step"] is None


def test_summarize_timing_means_full_epochs_else_extrapolates():
    full = R.summarize_timing(_position(), 6)
    assert full == {
        "seconds_per_epoch": 1.5,
        "seconds_per_epoch_extrapolated": False,
        "train_seconds": 3.0,
        "images_per_s": 64.0,
    }
    partial = R.summarize_timing(_position(epoch_seconds=[], step=4, train_seconds=2.0), 6)
    assert partial["seconds_per_epoch"] == pytest.approx(3.0) and partial["seconds_per_epoch_extrapolated"]
    nothing = R.summarize_timing(_position(epoch_seconds=[], step=0, train_seconds=0.0), 6)
    assert math.isnan(nothing["seconds_per_epoch"]) and nothing["images_per_s"] is None


def test_build_report_keeps_the_key_order_of_report_json():
    cfg = make_config("mini", dataset="toy")
    test = Meter(loss_sum=4.0, correct=6.0, count=8.0)
    position = _position()
    report = R.build_report(
        R.summarize_test(test),
        R.summarize_progress(position, 6, "completed"),
        R.summarize_timing(position, 6),
        R.summarize_environment(torch.device("cpu"), 1, cfg.precision),
        R.summarize_run(cfg, 123, None),
        {"rotation": {}, "invariance": {}},
    )
    assert list(report) == REPORT_KEYS
    assert report["test_accuracy"] == 0.75 and report["test_loss"] == 0.5 and report["test_images"] == 8
    assert report["eval"] == {
        "split": "test",
        "limit": None,
        "batch_size": cfg.effective_eval_batch_size(),
        "checkpoint": "best.safetensors",
    }
    assert report["device"] == "cpu" and report["torch_version"] == torch.__version__


def test_report_lines():
    report = {
        "test_accuracy": 0.5,
        "test_loss": 0.69315,
        "test_images": 48,
        "best_epoch": 3,
        "best_valid_accuracy": 0.625,
        "invariance": {},
    }
    assert R.report_lines(report) == [
        "test accuracy 50.00% (loss 0.6932, 48 images) with the best-on-valid weights from epoch 3 (valid 62.50%)"
    ]
    inv = {"max_abs_logit_change": 1e-7, "max_rel_logit_change": 2e-7, "prediction_agreement": 1.0}
    lines = R.report_lines(dict(report, best_epoch=None, best_valid_accuracy=None, invariance=inv))
    assert lines[0].endswith("weights from n/a")
    assert lines[1] == (
        "invariance check: max |logit change| under 90-degree rotations 1.00e-07 "
        "(relative 2.00e-07, predictions agree 100.0%)"
    )


def test_labels_and_rotation_summary():
    cfg = dataclasses.replace(make_config("mini"), patch_size=None)
    assert R.patch_label(None) == "global" and R.patch_label(5) == "5x5"
    assert R.rotation_title(cfg, 16) == f"{cfg.preset} GSA-Net, group {cfg.group}, global (n=16)"
    assert R.summarize_rotation([0.0, 90.0], [0.5, 0.25], 16) == {
        "angles_deg": [0.0, 90.0],
        "accuracy": [0.5, 0.25],
        "images": 16,
    }


@pytest.mark.parametrize(
    "group,elements,words",
    [
        ("p4", [1, 2, 3], "90-degree rotations"),
        ("p8m", [2, 4, 6, 8, 10, 12, 14], "90-degree rotations and mirrors"),
        ("p6", [3], "180-degree rotation"),
        ("D6", [3, 6, 9], "180-degree rotation and mirrors"),
        ("p3m", [3], "the mirror"),
        ("mz2", [1], "the mirror"),
        ("z2", [1, 2, 3], "90-degree rotations (not in z2)"),
        ("p5", [1, 2, 3], "90-degree rotations (not in p5)"),
    ],
)
def test_invariance_transforms_are_the_groups_exact_elements(group, elements, words):
    g, got, said = R.invariance_transforms(group)
    assert (got, said) == (elements, words)
    fallback = words.endswith(")")  # no exact element but the identity: p4's quarter turns act
    assert g is R._groups.get("p4" if fallback else group)


class _HalfTurnInvariant(torch.nn.Module):
    """Logits of ``x + rot180(x)``: invariant to 180° rotations, not to 90° ones or mirrors."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(2 * 5 * 5, 3, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return (x + torch.rot90(x, 2, (-2, -1))).flatten(1) @ self.w


def test_invariance_check_uses_the_groups_exact_elements():
    """p6 is checked under 180° only (0 change here); p4 under 90° (a change); the line says which."""
    model, images = _HalfTurnInvariant(), torch.rand(4, 2, 5, 5)
    kw = dict(prepare=lambda x: x, batch_size=3, device=torch.device("cpu"))
    p6 = R.invariance_check(model, images, group="p6", **kw)
    assert p6["max_abs_logit_change"] == 0.0 and p6["under"] == "180-degree rotation" and p6["images"] == 4
    p4 = R.invariance_check(model, images, group="p4", **kw)
    assert p4["max_abs_logit_change"] > 1e-3 and p4["under"] == "90-degree rotations"
    assert R.invariance_check(model, images, group="p6m", **kw)["max_abs_logit_change"] > 1e-3  # mirrors
    report = {"test_accuracy": 0.5, "test_loss": 0.5, "test_images": 4, "best_epoch": None, "invariance": p6}
    line = R.report_lines(report)[1]
    assert line.startswith("invariance check: max |logit change| under 180-degree rotation 0.00e+00")


def test_plot_rotation_leaves_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    import matplotlib

    before = matplotlib.get_backend()
    try:
        matplotlib.use("pdf")  # a notebook's or a user's choice
        path = R.plot_rotation(tmp_path / "rotation.png", [0.0, 90.0], [0.5, 0.25], "title")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError, match=r"rotation plot .* needs matplotlib"):
        R.plot_rotation(tmp_path / "again.png", [0.0], [0.5], "title")
