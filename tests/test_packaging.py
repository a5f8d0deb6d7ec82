"""pyproject.toml: a light core, the extras, one version, typed, licence metadata, a changelog."""

import re
from pathlib import Path

import tomllib

import gsa
from gsa.extras import DISTRIBUTION, OPTIONAL

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
META = PROJECT["project"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_the_distribution_name_and_a_light_core():
    assert META["name"] == DISTRIBUTION == "gsa-nets"
    assert {_name(r) for r in META["dependencies"]} == {"torch", "numpy", "safetensors", "tqdm", "platformdirs"}


def test_the_extras_install_what_gsa_extras_names():
    extras = META["optional-dependencies"]
    for package, extra in OPTIONAL.values():
        assert package.lower() in {_name(r) for r in extras[extra]}, (package, extra)
    assert f"{DISTRIBUTION}[train]" in extras["test"] and "pytest" in {_name(r) for r in extras["test"]}
    assert extras["all"] == [f"{DISTRIBUTION}[train,test,docs,export]"]


def test_one_version_typed_licence_and_changelog():
    assert "version" not in META and META["dynamic"] == ["version"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gsa.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", gsa.__version__)
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["gsa"]
    assert (ROOT / "src" / "gsa" / "py.typed").is_file()
    assert isinstance(META["license"], str) and "MIT" in META["license"]  # an SPDX expression (PEP 639)
    assert META["license-files"] and all((ROOT / f).is_file() for f in META["license-files"])
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{gsa.__version__}] - " in changelog and "## [Unreleased]" in changelog
