"""The gsa command line (in-process via gsa.cli.main, plus real subprocesses)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gsa.cli import main
from gsa.train.config import get_recipe
from gsa.train.hooks import Hooks, use_hooks

SMALL = [
    "--dataset",
    "toy",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--progress",
    "none",
    "--no-tensorboard",
    "--rotation-step",
    "90",
    "--rotation-subset",
    "16",
    "--invariance-subset",
    "8",
]


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
    proc = subprocess.run(
        [sys.executable, "-m", "gsa", "eval", str(run_dir)], capture_output=True, text=True, env=env, timeout=120
    )
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


def test_resume_with_a_flipped_bit_in_the_training_state_is_one_line(tmp_path, toy_env, capsys):
    out = tmp_path / "r"
    assert main(["train", *SMALL, "--out", str(out), "--max-steps", "3"]) == 0
    state = out / "last.state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--max-steps", "0", "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{state}: corrupt (SHA-256 differs" in err and "Traceback" not in err


def test_eval_last_reads_the_current_pair(run_dir, capsys):
    """Killed between the switch and the renames: last.json names last.next.safetensors; eval uses it."""
    (run_dir / "last.next.safetensors").write_bytes((run_dir / "last.safetensors").read_bytes())
    (run_dir / "last.safetensors").write_bytes(b"the previous weights")
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--checkpoint", "last", "--json"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert json.loads(capsys.readouterr().out)["images"] == report["test_images"]


def test_resume_cli_refuses_a_changed_optimizer_and_honours_more_epochs(tmp_path, toy_env, capsys):
    out = tmp_path / "r"
    assert main(["train", *SMALL, "--out", str(out), "--max-steps", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--optimizer", "sgd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "gsa: error: cannot resume with changed settings: --optimizer recorded 'adam', requested 'sgd'"
    )
    assert main(["train", "--resume", str(out), "--max-steps", "0", "--epochs", "3"]) == 0
    assert "epochs 2 -> 3" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["steps"] == 18


def test_eval_refuses_weights_of_another_model(run_dir, capsys):
    from gsa.train import checkpoint as ckpt
    from gsa.train.config import TrainConfig
    from gsa.train.state import Position, weights_metadata
    from gsa.train.testing import ToyNet

    other = TrainConfig.load(run_dir)
    other.group = "p8"  # same tensors (ToyNet ignores the group), another run's model
    ckpt.save_weights(run_dir / "best.safetensors", ToyNet(), weights_metadata(other, Position(), ToyNet()))
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights of another model (group 'p8' in the file, 'p4' in the model)" in err


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "--recipe", "nope"], 2, "unknown recipe 'nope'"),
        (["train", "--resume", "/nonexistent/run"], 2, "no such run directory"),
        (["eval", "/nonexistent/run"], 2, "no such run directory or checkpoint"),
        (["train", "--dataset", "toy", "--lr", "-1"], 2, "--lr must be > 0"),
        (["train", "--dataset", "toy", "--group", "p0"], 2, "unknown group 'p0'; expected one of: z2, p4, "),
    ],
)
def test_bad_input_exits_with_one_line(args, code, message, capsys, toy_env):
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--lr", "0"),
        ("--weight-decay", "nan"),
        ("--weight-decay", "-1"),
        ("--momentum", "-5"),
        ("--momentum", "nan"),
        ("--momentum", "1"),
        ("--rotation-step", "nan"),
        ("--rotation-step", "361"),
        ("--warmup-epochs", "nan"),
        ("--grad-clip", "nan"),
        ("--grad-clip", "inf"),
        ("--ema", "1"),
        ("--ema", "-0.5"),
        ("--attention-dropout", "nan"),
        ("--dropout", "1"),
    ],
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
    assert main(["info", "--image-size", "3", "--no-flops"]) == 2
    err = capsys.readouterr().err
    assert "the model needs images of at least 4x4 pixels" in err and "--image-size gives 3x3" in err
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
    # the recipe's own model arguments (their values are pinned in tests/train/test_config.py)
    assert cfg["model_args"] == get_recipe("mini").model_args and cfg["model_args"]["norm"] == "batch"
    assert cfg["train_subset"] == 7000
    assert cfg["warmup_epochs"] == 0.1 and cfg["scheduler"] == "cosine"


def test_ema_flag_sets_and_clears_the_moving_average(capsys):
    assert main(["train", "--ema", "0.999", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["ema"] == 0.999
    for off in ("none", "0"):
        assert main(["train", "--ema", off, "--print-config"]) == 0
        assert json.loads(capsys.readouterr().out)["ema"] is None


def test_input_stats_flag_selects_the_original_codes_normalisation(capsys):
    assert main(["train", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["input_stats"] == "dataset"
    assert main(["train", "--recipe", "cifar10", "--input-stats", "original", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["input_stats"] == "original"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--input-stats", "imagenet"])
    assert exc.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_flags_override_recipe(capsys):
    assert (
        main(
            [
                "train",
                "--recipe",
                "cifar10",
                "--patch-size",
                "global",
                "--lr",
                "0.2",
                "--grad-clip",
                "none",
                "--model-arg",
                "num_heads=4",
                "--print-config",
            ]
        )
        == 0
    )
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["patch_size"] is None and cfg["lr"] == 0.2 and cfg["optimizer"] == "sgd" and cfg["batch_size"] == 24
    assert cfg["model_args"] == {"input_dropout": 0.2, "num_heads": 4}  # added to the recipe's
    assert cfg["grad_clip"] is None


def test_config_of_a_finished_run_reproduces_it(run_dir, tmp_path, capsys):
    saved = json.loads((run_dir / "config.json").read_text())
    capsys.readouterr()
    assert main(["train", "--config", str(run_dir / "config.json"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == saved
    # its "out" is the finished run: refused, as a new run there always is
    assert main(["train", "--config", str(run_dir / "config.json")]) == 2
    assert (
        capsys.readouterr().err
        == f"gsa: error: {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out\n"
    )
    again = tmp_path / "again"
    assert main(["train", "--config", str(run_dir), "--out", str(again)]) == 0  # a run directory works too
    assert json.loads((again / "config.json").read_text()) == {**saved, "out": str(again)}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_print_config_is_a_fixed_point_of_config(fmt, tmp_path, capsys):
    flags = [
        "--recipe",
        "cifar10",
        "--patch-size",
        "global",
        "--lr",
        "1e-5",
        "--grad-clip",
        "0.5",
        "--max-steps",
        "9",
        "--model-arg",
        "num_heads=4",
        "--no-tensorboard",
        "--deterministic",
        "--print-config",
    ]
    assert main(["train", *flags]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / f"exp.{fmt}"
    if fmt == "yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(json.loads(printed)))
    else:
        path.write_text(printed)
    assert main(["train", "--config", str(path), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_flags_beat_the_config_file(tmp_path, capsys):
    path = tmp_path / "exp.json"
    path.write_text(
        json.dumps(
            {
                "recipe": "cifar10",
                "epochs": 3,
                "lr": 0.1,
                "grad_clip": 1.0,
                "max_steps": 20,
                "model_args": {"num_heads": 4, "channels": 8},
            }
        )
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(path),
                "--lr",
                "0.2",
                "--grad-clip",
                "none",
                "--max-steps",
                "0",
                "--model-arg",
                "channels=16",
                "--print-config",
            ]
        )
        == 0
    )
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["recipe"], cfg["optimizer"], cfg["epochs"], cfg["lr"]) == ("cifar10", "sgd", 3, 0.2)
    assert cfg["grad_clip"] is None and cfg["max_steps"] is None
    assert cfg["model_args"] == {"num_heads": 4, "channels": 16}
    assert main(["train", "--config", str(path), "--recipe", "pcam", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)  # --recipe replaces the file's recipe: it fills what the file leaves out
    assert (cfg["recipe"], cfg["dataset"], cfg["batch_size"], cfg["epochs"], cfg["lr"]) == ("pcam", "pcam", 8, 3, 0.1)


@pytest.mark.parametrize(
    "name, text, extra, message",
    [
        ("exp.json", '{"bach_size": 3}', [], "exp.json: unknown key 'bach_size' (did you mean 'batch_size'?)"),
        ("exp.json", '{"epochs": "3"}', [], "exp.json: config field 'epochs' must be an integer, got '3'"),
        ("exp.json", '{"lr": -1}', [], "exp.json: --lr must be > 0 (a finite number), got -1"),
        ("exp.json", '{"lr": 0.1}', ["--lr", "-1"], "gsa: error: --lr must be > 0 (a finite number), got -1.0"),
        ("exp.json", "{not json", [], "exp.json: not valid JSON (Expecting property name enclosed in double quotes"),
        ("exp.yaml", "lr: [0.1\n", [], "exp.yaml: not valid YAML (expected ',' or ']', but got '<stream end>'"),
        ("exp.yml", "lr: 0.1\n", ["--no-yaml"], "exp.yml: reading YAML needs PyYAML (pip install pyyaml)"),
        (None, None, [], "nope.json: no such configuration file"),
        ("exp.json", "{}", ["--resume", "."], "gsa: error: --config cannot be combined with --resume"),
    ],
)
def test_config_file_errors_are_one_line(name, text, extra, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / (name or "nope.json")
    if text is not None:
        path.write_text(text)
    if name and name.endswith(".yaml"):
        pytest.importorskip("yaml")
    if "--no-yaml" in extra:
        monkeypatch.setitem(sys.modules, "yaml", None)
        extra = []
    assert main(["train", "--config", str(path), *extra, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gsa: error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_info_counts_params_and_flops(capsys, toy_env):
    assert main(["info", "--dataset", "toy", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 691 and info["flops"] > 0 and info["output_shape"] == [1, 3]
    assert main(["info", "--dataset", "toy"]) == 0
    assert "parameters 691" in capsys.readouterr().out


def test_any_rotation_order_from_the_command_line(capsys):
    """--group p6 / D6 (escnn's name for p6m) build a GSA-Net; |H| = 12 shows in the group embedding."""
    assert main(["info", "--group", "p6", "--no-flops", "--json"]) == 0
    p6 = json.loads(capsys.readouterr().out)
    assert main(["info", "--group", "D6", "--no-flops", "--json"]) == 0
    d6 = json.loads(capsys.readouterr().out)
    assert p6["group"] == "p6" and d6["group"] == "D6" and d6["params"] > p6["params"]


def test_list_recipes_and_help(capsys):
    assert main(["train", "--list-recipes"]) == 0
    assert "rotmnist" in capsys.readouterr().out
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--config FILE" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["--hooks", "GSA_HOOKS"])
def test_hooks_by_entry_point_name(how, hooks_plugin, monkeypatch, capsys):
    hooks_plugin(toyplugin="gsa.train.testing:toy_hooks")
    monkeypatch.delenv("GSA_HOOKS", raising=False)
    args = ["info", "--dataset", "toy", "--json", "--no-flops"]
    if how == "GSA_HOOKS":
        monkeypatch.setenv("GSA_HOOKS", "toyplugin")
    else:
        args += ["--hooks", "toyplugin"]
    with use_hooks(Hooks()):  # gsa's own hooks do not know 'toy': only the plugin's do
        assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 691


def test_hooks_from_the_current_directory_are_refused(tmp_path):
    """GSA_HOOKS naming a module of the current directory: one-line error, the module is never imported."""
    (tmp_path / "planted.py").write_text(
        "import pathlib\npathlib.Path('imported').write_text('x')\nfrom gsa.train.testing import toy_hooks as hooks\n"
    )
    env = {**os.environ, "GSA_HOOKS": "planted:hooks"}
    proc = subprocess.run(
        [sys.executable, "-m", "gsa", "info", "--dataset", "toy", "--no-flops"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and not (tmp_path / "imported").exists()
    err = proc.stderr.strip()
    assert err.splitlines() == [err] and err.startswith("gsa: error: GSA_HOOKS 'planted:hooks': no such hooks")
    assert "gsa.hooks" in err and "Traceback" not in err


def test_python_m_gsa_does_not_import_from_the_current_directory(tmp_path, hooks_plugin):
    """A plugin's module shadowed by a file of the same name in the directory gsa is started from."""
    site = hooks_plugin(
        modules={"gsa_plugin_mod": "from gsa.train.testing import toy_hooks as hooks\n"},
        shadowed="gsa_plugin_mod:hooks",
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "gsa_plugin_mod.py").write_text("import pathlib\npathlib.Path('imported').write_text('x')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("GSA_HOOKS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gsa", "info", "--dataset", "toy", "--no-flops", "--hooks", "shadowed"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (work / "imported").exists() and "ToyNet" in proc.stdout


def test_out_that_is_a_file_is_one_line(tmp_path, capsys, toy_env):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    assert main(["train", *SMALL, "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err == f"gsa: error: --out {afile} is a file, not a directory; choose another --out\n"
    assert afile.read_text() == "notes"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_out_in_a_read_only_directory_is_one_line(read_only_dir, capsys, toy_env):
    ro = read_only_dir
    assert main(["train", *SMALL, "--out", str(ro / "run")]) == 2
    assert capsys.readouterr().err == (
        f"gsa: error: cannot create the run directory {ro / 'run'} (Permission denied); choose another --out\n"
    )
    assert main(["train", *SMALL, "--out", str(ro)]) == 2
    assert capsys.readouterr().err == (
        f"gsa: error: cannot write to the run directory {ro} (Permission denied); choose another --out\n"
    )


def test_out_on_a_full_disk_is_one_line(tmp_path, capsys, toy_env, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"gsa: error: cannot write config.json in {out} (No space left on device); no checkpoint was written yet\n"
    )
    assert sorted(p.name for p in out.iterdir()) == []  # no temporary file, and the lock is gone


def test_out_holding_another_runs_files_is_refused(run_dir, capsys):
    """A finished run whose last.* were removed (kept its best weights): a new run must not overwrite them."""
    for name in ("last.json", "last.safetensors", "last.state.pt"):
        (run_dir / name).unlink()
    best = (run_dir / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", *SMALL, "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"gsa: error: {run_dir} holds another run's files (config.json, best.safetensors, metrics.csv, "
        "report.json, rotation.png) but no checkpoint to resume; choose another --out (or move those "
        "files away)\n"
    )
    assert (run_dir / "best.safetensors").read_bytes() == best


@pytest.mark.slow
def test_two_concurrent_runs_in_one_directory(tmp_path):
    """Two real `gsa train --out DIR` processes at once: one trains, the other stops at once with the
    lock's message naming the first; killing the first (SIGKILL) leaves no stale lock."""
    import signal
    import time

    import gsa

    out = tmp_path / "run"
    src = str(Path(gsa.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "GSA_HOOKS": "gsa.train.testing:toy_hooks",
        "OMP_NUM_THREADS": "1",
        "CI": "true",
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
    }
    cmd = [sys.executable, "-m", "gsa", "train", *SMALL, "--epochs", "100000", "--device", "cpu", "--out", str(out)]
    logs = [tmp_path / f"err{i}.txt" for i in range(2)]
    files = [open(log, "w") for log in logs]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f) for f in files]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither run ended"
            time.sleep(0.1)
        loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
        winner = procs[1 - loser]
        err = logs[loser].read_text()
        assert procs[loser].returncode == 2, err
        assert err.startswith(f"gsa: error: {out} is in use by another gsa run (pid {winner.pid} on ")
        assert err.count("\n") == 1 and "Traceback" not in err
        assert winner.poll() is None  # exactly one run goes on
        from gsa.train.rundir import LOCK_FILE, RunLock

        winner.send_signal(signal.SIGKILL)
        winner.wait(timeout=60)
        assert (out / LOCK_FILE).exists()  # a killed run cannot clean up, but the OS dropped its lock
        RunLock().acquire(out).release()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()


def test_version_is_gsa_dunder_version(capsys):
    """One source for the version: the installed distribution (gsa-nets) reads gsa.__version__ too."""
    import gsa

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"gsa {gsa.__version__}"
