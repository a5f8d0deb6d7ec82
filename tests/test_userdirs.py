"""``gsa.userdirs``: the platform's cache folder for gsa, and the overrides of its two uses."""

import sys
from pathlib import Path

import pytest

from gsa import userdirs
from gsa.data.base import default_data_dir
from gsa.nn import native


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("XDG_CACHE_HOME", "GSA_CACHE_DIR", "GSA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG layout is Linux's")
def test_linux_cache_root_honours_xdg(home, monkeypatch):
    assert userdirs.cache_root() == home / ".cache" / "gsa"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert userdirs.cache_root() == home / "xdg" / "gsa"
    # datasets and kernels follow it unless their own variable says otherwise
    assert default_data_dir() == userdirs.data_dir() == home / "xdg" / "gsa" / "data"
    assert native._cache_dir() == userdirs.kernel_dir() == home / "xdg" / "gsa" / "kernels"


def test_gsa_variables_override_the_platform_folders(home, monkeypatch):
    monkeypatch.setenv("GSA_DATA_DIR", "~/my-data")
    monkeypatch.setenv("GSA_CACHE_DIR", str(home / "k"))
    assert default_data_dir() == Path(home / "my-data") and userdirs.kernel_dir() == home / "k"
    assert userdirs.cache_root().name == "gsa" and home in userdirs.cache_root().parents
