"""``gsa.extras``: the core imports and runs without the ``[train]`` extra; what needs it names it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gsa.errors import GsaError, MissingDependencyError
from gsa.extras import OPTIONAL, install_command, require

SRC = Path(__file__).resolve().parents[1] / "src"

# makes the optional packages unimportable, as in an install without extras
BLOCK = textwrap.dedent(
    """
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    for _name in list(sys.modules):
        if _name.split(".")[0] in {blocked!r}:
            del sys.modules[_name]
    sys.meta_path.insert(0, Blocker())
    """
).format(blocked=set(OPTIONAL))


def test_require_names_the_package_and_the_extra(monkeypatch):
    for name in ("PIL", "PIL.Image"):  # as if not installed (PIL.Image may have been imported already)
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError) as info:
        require("PIL.Image", "a folder: dataset")
    msg = str(info.value)
    assert msg == 'a folder: dataset needs Pillow, which is not installed: pip install "gsa-nets[train]"'
    assert isinstance(info.value, ImportError) and isinstance(info.value, GsaError)
    assert install_command("docs") == 'pip install "gsa-nets[docs]"'


def test_require_returns_the_module_and_reraises_other_import_errors(tmp_path, monkeypatch):
    import json

    assert require("json", "x") is json
    (tmp_path / "gsa_test_broken_mod.py").write_text("import gsa_test_no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:  # broken inside: not a missing extra
        require("gsa_test_broken_mod", "x")
    assert not isinstance(info.value, MissingDependencyError)


def _run_without_extras(code: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(BLOCK + textwrap.dedent(code))
    env = {
        "PYTHONPATH": str(SRC),
        "PATH": "",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "GSA_NATIVE": "0",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


@pytest.mark.slow
def test_the_core_imports_and_runs_without_the_extras(tmp_path):
    """Every part of gsa imports without matplotlib, TensorBoard, h5py and Pillow; the layers and a
    model run; ``gsa train`` stops before it starts with one line naming the extra."""
    res = _run_without_extras(
        """
        import warnings
        warnings.simplefilter("ignore")
        import torch
        import gsa, gsa.nn, gsa.models, gsa.data, gsa.train, gsa.cli, gsa.viz
        for name in ("matplotlib", "tensorboard", "h5py", "PIL"):
            try:
                __import__(name)
            except ModuleNotFoundError:
                pass
            else:
                raise SystemExit(name + " is importable: the blocker does not work")
        model = gsa.models.create("rotmnist", group="p4", channels=6, num_heads=1, block_sizes=(0, 1), crop=0)
        print(tuple(model.eval()(torch.randn(1, 1, 12, 12)).shape))
        lift = gsa.nn.LiftingSelfAttention("p4", 1, 4, num_heads=1, patch_size=3)
        print(tuple(lift(torch.randn(1, 1, 5, 5)).shape))
        code = gsa.cli.main(["train", "--out", "run", "--epochs", "1", "--max-steps", "1", "--train-subset", "8",
                             "--eval-subset", "8", "--progress", "none"])
        import os
        print(code, os.path.exists("run"))
        """,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["(1, 10)", "(1, 4, 4, 5, 5)", "1 False"]
    err = res.stderr.strip().splitlines()
    assert err == [
        "gsa: error: TensorBoard logging (--no-tensorboard turns it off) needs tensorboard, "
        'which is not installed: pip install "gsa-nets[train]"'
    ]
