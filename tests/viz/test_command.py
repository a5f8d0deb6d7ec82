"""``python -m gsa.viz --quick`` and ``gsa figures`` write the four PNGs."""

from __future__ import annotations

import json
import subprocess
import sys

from gsa import cli

NAMES = ("lifting.png", "steerability.png", "rotation_accuracy.png", "scale_accuracy.png")


def test_quick_figures(tmp_path):
    out = tmp_path / "figs"
    proc = subprocess.run(
        [sys.executable, "-m", "gsa.viz", "--quick", "--out", str(out), "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={"MPLBACKEND": "Agg", **__import__("os").environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in NAMES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    summary = json.loads((out / "figures.json").read_text())
    assert summary["lifting"]["equivariance_error"] < 1e-5
    assert summary["steerability"]["rotation_error"] < 1e-5
    curve = summary["rotation_accuracy"]["p4"]
    assert curve["angles_deg"] == [0.0, 90.0, 180.0, 270.0]
    # a p4 model is invariant to quarter turns: the same accuracy at every multiple of 90 degrees
    assert len(set(curve["accuracy"])) == 1
    assert "run" not in curve


def test_gsa_figures_subcommand(tmp_path, capsys):
    assert cli.main(["figures", "--only", "lifting", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lifting.png").is_file()
    assert cli.main(["figures", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err
