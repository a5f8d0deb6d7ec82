"""The learning benchmark and its CNN baselines: invariant baselines, a quick run end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gsa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import GroupCNN  # noqa: E402
from benchmarks.learning import MODELS, lr_factor, summarize  # noqa: E402


@pytest.mark.parametrize("group", ["z2", "p4", "p4m"])
def test_group_cnn_is_invariant_to_its_group(group):
    torch.manual_seed(0)
    model = GroupCNN(group, channels=4).double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    ref = model(x)
    for e in range(model.group.order):
        torch.testing.assert_close(model(gsa.groups.act_on_image(group, e, x)), ref, rtol=0, atol=1e-12)


def test_plain_cnn_is_not_rotation_invariant():
    torch.manual_seed(0)
    model = GroupCNN("z2", channels=4).double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    assert (model(torch.rot90(x, 1, dims=(-2, -1))) - model(x)).abs().max() > 1e-3


def test_baselines_have_about_the_gsa_parameter_count():
    from benchmarks.learning import build

    counts = {
        name: sum(p.numel() for p in build(name, MODELS[name], {}).parameters())
        for name in ("gsa-p4", "cnn", "gcnn-p4")
    }
    assert max(counts.values()) < 1.1 * min(counts.values()), counts


def test_lr_factor_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[100] == pytest.approx(0.0, abs=1e-12)


def test_summary_reports_mean_and_spread_over_seeds():
    runs = [
        {
            "model": "m",
            "params": 1,
            "loss_step0": 2.0 + s,
            "test_acc": 0.5 + 0.1 * s,
            "images_per_second": 1.0,
            "curve": [{"train_loss": 1.0, "valid_acc": 0.4}],
        }
        for s in range(3)
    ]
    (row,) = summarize(runs)
    assert row["seeds"] == 3
    assert row["test_acc"][0] == pytest.approx(0.6) and row["test_acc"][1] == pytest.approx(0.1)


def test_quick_learning_benchmark_writes_table_json_and_png(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.learning",
            "--quick",
            "--models",
            "gsa-p4,gcnn-p4",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "test %" in p.stdout and "gcnn-p4" in p.stdout
    data = json.loads((tmp_path / "learning.json").read_text())
    assert {r["model"] for r in data["runs"]} == {"gsa-p4", "gcnn-p4"}
    for run in data["runs"]:
        assert run["curve"] and 0.0 <= run["test_acc"] <= 1.0
        assert run["curve"][-1]["images"] == 64
    gsa_run = next(r for r in data["runs"] if r["model"] == "gsa-p4")
    assert gsa_run["loss_step0"] == pytest.approx(2.302585, abs=1e-3)  # zero-initialised classifier
    assert data["machine"]["cpu"] and data["setup"]["images"] == 64
    assert (tmp_path / "learning.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--models", "resnet"], "unknown model(s) resnet"),
        (["--ema", "1"], "--ema must be in (0, 1), got 1"),
    ],
)
def test_bad_options_are_a_clear_error(tmp_path, flags, message):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.learning", *flags, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2 and message in p.stderr


def test_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from benchmarks.learning import plot

    curve = [{"images": 8 * i, "seconds": float(i), "valid_acc": 0.1 * i} for i in range(3)]
    before = matplotlib.get_backend()
    try:
        matplotlib.use("pdf")
        path = plot([{"model": "cnn", "curve": curve}], tmp_path / "curves.png", "title")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_positional_encoding_has_a_model():
    """``--models gsa-p4-pos-<name>``: gsa-p4 with every other encoding of gsa.nn.positional.ENCODINGS."""
    from benchmarks.learning import build
    from gsa.nn.positional import ENCODINGS

    builtin = ["rowcol", "joint", "fourier", "fourier-fixed", "gevit"]  # (a docs page registers more)
    assert ENCODINGS.names()[: len(builtin)] == builtin
    assert [m for m in MODELS if m.startswith("gsa-p4-pos-")] == [f"gsa-p4-pos-{n}" for n in builtin[1:]]
    for name in builtin[1:]:
        net = build(f"gsa-p4-pos-{name}", MODELS[f"gsa-p4-pos-{name}"], {})
        assert net.lifting.positional_name == name and net.config.channels == MODELS["gsa-p4"].args["channels"]


def test_with_ema_the_moving_average_is_evaluated():
    from benchmarks.learning import Setup, run_one

    quick = dict(images=64, eval_every=32, valid_subset=50, test_subset=50)
    plain = run_one("gcnn-p4", 0, Setup(**quick))
    averaged = run_one("gcnn-p4", 0, Setup(**quick, ema=0.9))
    assert plain["loss_step0"] == averaged["loss_step0"]  # the same training
    assert plain["test_loss"] != averaged["test_loss"]  # a different network evaluated
    assert [c["train_loss"] for c in plain["curve"]] == [c["train_loss"] for c in averaged["curve"]]
