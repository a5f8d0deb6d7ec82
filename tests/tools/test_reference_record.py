"""tools/reference_record.py: a record of finished runs, without the machine's paths."""

import importlib.util
import json
from pathlib import Path

import pytest

from gsa.train.engine import train
from gsa.train.hooks import use_hooks
from gsa.train.testing import toy_config, toy_hooks

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "reference_record.py"


def _tool():
    spec = importlib.util.spec_from_file_location("reference_record", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_record_of_two_runs(tmp_path):
    with use_hooks(toy_hooks()):
        reports = [train(toy_config(tmp_path / f"s{seed}", seed=seed)) for seed in (0, 1)]
    out = tmp_path / "record.json"
    flags = ["--out", str(out), "--what", "toy", "--command", "gsa train", "--machine", "here", "--date", "2026-12-02"]
    assert _tool().main([*flags, str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    record = json.loads(out.read_text())
    assert (record["benchmark"], record["date"], record["machine"]) == ("toy", "2026-12-02", "here")
    for run, report, seed in zip(record["runs"], reports, (0, 1)):
        assert run["run"] == f"s{seed}" and run["config"]["seed"] == seed
        assert "out" not in run["config"] and "data_dir" not in run["config"]
        assert run["report"]["test_accuracy"] == report["test_accuracy"]
        assert [e["epoch"] for e in run["epochs"]] == [1, 2] and run["epochs"][-1]["step"] == 12
    assert str(tmp_path) not in out.read_text()  # no path of this machine


def test_a_folder_that_holds_no_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not a finished gsa run"):
        _tool().main(
            ["--out", str(tmp_path / "r.json"), "--what", "x", "--command", "x", "--machine", "x", str(tmp_path)]
        )
