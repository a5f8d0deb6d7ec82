"""The README's code runs as written, and its two commands are the ones CI uses."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_readme_python_block_runs_and_prints_what_it_says(index):
    code = PY_BLOCKS[index]
    torch.manual_seed(0)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})
    printed = buf.getvalue().splitlines()
    prints = [line for line in code.splitlines() if line.startswith("print(")]
    assert len(printed) == len(prints)
    # a `print(...)  # value` comment states what the line prints
    for line, out in zip(prints, printed):
        m = re.search(r"\)\s+#\s*(.+)$", line)
        if not m:
            continue
        comment = m.group(1).strip()
        want = comment if comment.startswith(("[", "(")) else comment.split()[0].rstrip(":")
        assert out == want, f"{line!r} printed {out!r}, the README says {want!r}"


def test_readme_commands_match_ci():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    main_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert main_cmd.endswith("gsa train") and "pip install torch==2.13.0" in main_cmd
    assert 'pip install -e ".[train]"' in main_cmd  # gsa train needs the [train] extra
    assert test_cmd.endswith("python -m pytest") and ".[test]" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0" in ci and "python -m pytest" in ci
