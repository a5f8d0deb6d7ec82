"""The gsa command line (in-process via gsa.cli.main, plus one real subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from gsa.cli import main

SMALL = ["--dataset", "toy", "--epochs", "2", "--batch-size", "16", "--lr", "0.01", "--progress", "none",
         "--no-tensorboard", "--rotation-step", "90", "--rotation-subset", "16", "--invariance-subset", "8"]


@pytest.fixture
def toy_env(monkeypatch, toy):
    monkeypatch.setenv("GSA_HOOKS", "gsa.train.testing:toy_hooks")
    return toy


@pytest.fixture
def run_dir(tmp_path, toy_env):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    return out


def test_train_then_eval_agree_exactly(run_dir, capsys):
    capsys.readouterr()
    report = json.loads((run_dir / "report.json").read_text())
    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == report["test_accuracy"]
    assert result["images"] == report["test_images"]
    assert result["loss"] == pytest.approx(report["test_loss"], rel=1e-6)
    # a checkpoint path works too, and the text output shows the same number
    assert main(["eval", str(run_dir / "best.safetensors")]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy {100 * report['test_accuracy']:.2f}%" in text


def test_eval_rotations_and_invariance(run_dir, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--rotations", "--rotation-step", "45"]) == 0
    out = capsys.readouterr().out
    assert "rotation (deg)  accuracy" in out and "315" in out
    assert "invariance check: max |logit change| under 90-degree rotations" in out


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_one_line_error(run_dir, capsys, damage):
    best = run_dir / "best.safetensors"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00" * 64)
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gsa: error: ") and str(best) in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_subprocess_has_no_traceback(run_dir):
    best = run_dir / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    env = {**os.environ, "GSA_HOOKS": "gsa.train.testing:toy_hooks"}
    proc = subprocess.run([sys.executable, "-m", "gsa", "eval", str(run_dir)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "best.safetensors" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_cli(tmp_path, toy_env, capsys):
    out = tmp_path / "r"
    assert main(["train", *SMALL, "--out", str(out), "--max-steps", "3"]) == 0
    assert json.loads((out / "report.json").read_text())["steps"] == 3
    assert main(["train", "--resume", str(out), "--max-steps", "0", "--progress", "none"]) == 0
    assert "max_steps 3 -> None" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["steps"] == 12


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "--recipe", "nope"], 2, "unknown recipe 'nope'"),
        (["train", "--resume", "/nonexistent/run"], 2, "no such run directory"),
        (["eval", "/nonexistent/run"], 2, "no such run directory or checkpoint"),
        (["train", "--dataset", "toy", "--lr", "-1"], 2, "--lr must be > 0"),
    ],
)
def test_bad_input_exits_with_one_line(args, code, message, capsys, toy_env):
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "flag, value",
    [("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--weight-decay", "nan"), ("--weight-decay", "-1"),
     ("--momentum", "-5"), ("--momentum", "nan"), ("--momentum", "1"), ("--rotation-step", "nan"),
     ("--rotation-step", "361"), ("--warmup-epochs", "nan"), ("--grad-clip", "nan"), ("--grad-clip", "inf"),
     ("--attention-dropout", "nan"), ("--dropout", "1")],
)
def test_numeric_options_refuse_non_finite_and_out_of_range_values(flag, value, capsys, toy_env):
    """Every numeric training option: a one-line error before anything runs, never a traceback."""
    assert main(["train", "--dataset", "toy", flag, value, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gsa: error: {flag} must be") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("field, value", [("lr", "abc"), ("eval_batch_size", "big")])
def test_eval_of_a_config_with_a_wrong_type_is_one_line(run_dir, capsys, field, value):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg[field] = value
    (run_dir / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gsa: error: ") and f"config field '{field}' must be" in err and err.count("\n") == 1


def test_info_image_size_below_the_models_minimum_is_one_line(capsys):
    assert main(["info", "--image-size", "8", "--no-flops"]) == 2
    err = capsys.readouterr().err
    assert "the model needs images of at least 22x22 pixels" in err and "--image-size gives 8x8" in err
    assert err.count("\n") == 1


def test_resume_without_checkpoint(tmp_path, capsys, toy_env):
    (tmp_path / "config.json").write_text(json.dumps({"recipe": "mini", "dataset": "toy"}))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_argparse_rejects_bad_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--precision", "fp8"])
    assert exc.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_default_train_is_the_mini_recipe_on_rotmnist_mini(capsys):
    assert main(["train", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["recipe"] == "mini" and cfg["dataset"] == "rotmnist-mini" and cfg["group"] == "p4"
    assert cfg["patch_size"] == 3 and cfg["optimizer"] == "adam" and cfg["lr"] == 5e-3
    assert cfg["model_args"] == {"channels": 24, "num_heads": 2, "lifting_heads": 8} and cfg["train_subset"] == 7000
    assert cfg["warmup_epochs"] == 0.05 and cfg["scheduler"] == "cosine"


def test_flags_override_recipe(capsys):
    assert main(["train", "--recipe", "cifar10", "--patch-size", "global", "--lr", "0.2", "--grad-clip", "none",
                 "--model-arg", "num_heads=4", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["patch_size"] is None and cfg["lr"] == 0.2 and cfg["optimizer"] == "sgd" and cfg["batch_size"] == 24
    assert cfg["model_args"] == {"num_heads": 4} and cfg["grad_clip"] is None


def test_info_counts_params_and_flops(capsys, toy_env):
    assert main(["info", "--dataset", "toy", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 691 and info["flops"] > 0 and info["output_shape"] == [1, 3]
    assert main(["info", "--dataset", "toy"]) == 0
    assert "parameters 691" in capsys.readouterr().out


def test_list_recipes_and_help(capsys):
    assert main(["train", "--list-recipes"]) == 0
    assert "rotmnist" in capsys.readouterr().out
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
