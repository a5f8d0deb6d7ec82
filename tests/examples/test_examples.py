"""Run every script in ``examples/`` in its smoke mode (``--smoke``): they must not rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# script -> text its output must contain
EXPECTED = {
    "custom_gsanet.py": "invariance to 90-degree rotations",
    "gsa_in_cnn.py": "test accuracy",
    "check_equivariance.py": "plain Conv2d stack (not equivariant)",
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_smoke(script, tmp_path):
    env = {
        **os.environ,
        "GSA_SMOKE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": os.environ.get("GSA_TEST_THREADS", "2"),
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert EXPECTED[script] in proc.stdout, proc.stdout
    if script == "check_equivariance.py":
        # round-off for the equivariant models, O(1) for the plain CNN
        for line in proc.stdout.splitlines():
            if "max error" in line:
                err = float(line.split("max error")[1].split()[0])
                assert (err > 0.1) if "not equivariant" in line else (err < 1e-10), line
