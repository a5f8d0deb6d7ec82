import os

import pytest
import torch

# The CI machine has 2 cores; keep intra-op threads predictable.
torch.set_num_threads(int(os.environ.get("GSA_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def hooks_plugin(tmp_path, monkeypatch):
    """``hooks_plugin(**entry_points)``: an installed-looking distribution (a ``.dist-info`` on
    ``sys.path``, no reinstall needed) registering ``NAME = "module:attr"`` in the ``gsa.hooks``
    entry-point group, plus any ``modules={"name": "source"}`` beside it; returns its directory."""

    def install(modules=None, **entry_points):
        site = tmp_path / "plugin-site"
        info = site / "gsa_test_plugin-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gsa-test-plugin\nVersion: 1.0\n")
        lines = [f"{name} = {target}" for name, target in entry_points.items()]
        (info / "entry_points.txt").write_text("[gsa.hooks]\n" + "\n".join(lines) + "\n")
        for name, source in (modules or {}).items():
            (site / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(site))
        return site

    return install


@pytest.fixture
def read_only_dir(tmp_path):
    """A 0o500 directory; skips the test where permissions do not bind (root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        (ro / "probe").touch()
    except PermissionError:
        yield ro
    else:
        (ro / "probe").unlink()
        pytest.skip("permissions do not bind this user (root)")
    finally:
        ro.chmod(0o700)
