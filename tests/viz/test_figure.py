"""``gsa.viz._figure``: figures on their own Agg canvas; matplotlib's backend and pyplot untouched."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_figures_leave_the_backend_and_pyplot_alone(tmp_path):
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('pdf')\n"
        "from gsa.viz.layers import lifting_figure\n"
        f"lifting_figure({str(tmp_path / 'lifting.png')!r})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(SRC), "GSA_NATIVE": "0", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["pdf", "False"]
    assert (tmp_path / "lifting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
