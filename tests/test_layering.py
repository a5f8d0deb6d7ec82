"""The package's import layering: ``groups`` ← ``nn`` ← ``scale`` ← ``models`` ← ``train`` ← ``cli``.

Every ``import`` of a ``gsa`` module in ``src/gsa`` (absolute or relative, at module level or inside a
function) is read from the source with :mod:`ast` and checked against the packages its layer may use.
The library layers (groups, equivariance, nn, models, data) never import plotting libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gsa"

# what each top-level part of gsa may import from gsa (besides itself)
ALLOWED = {
    "registry": set(),  # gsa.registry imports nothing from gsa; every layer may use it
    "userdirs": set(),  # likewise gsa.userdirs (private cache directories, the stamp key)
    "groups": set(),
    "errors": set(),
    "extras": {"errors"},  # gsa.extras (optional dependencies: which extra installs what)
    "openmp": set(),  # gsa.openmp (OpenMP's wait policy, set before torch is imported)
    "equivariance": {"groups"},
    "nn": {"groups"},
    "scale": {"nn"},  # gsa.scale: the dilation group and its layers (paper App. E), built on gsa.nn
    "models": {"groups", "nn", "scale", "errors"},
    "data": {"groups", "errors"},
    "export": {"errors"},
    "train": {"groups", "nn", "models", "data", "equivariance", "errors"},
    "viz": {"groups", "nn", "scale", "models", "data", "equivariance", "train", "errors"},
    "cli": {"groups", "nn", "models", "data", "equivariance", "train", "viz", "errors", "export"},
    "__init__": {"groups", "nn", "scale", "models", "equivariance", "errors"},
    "__main__": {"cli"},
}
BOTTOM = ("registry", "userdirs", "errors", "extras", "openmp")  # every layer above may use these
for _part_name, _uses in ALLOWED.items():
    if _part_name not in BOTTOM:
        _uses.update(("registry", "userdirs", "extras", "openmp"))
NO_PLOTTING = {
    "registry",
    "userdirs",
    "extras",
    "openmp",
    "groups",
    "equivariance",
    "nn",
    "scale",
    "models",
    "data",
    "export",
}


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Fully qualified names of every module imported by ``path``."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # "from . import nn"
    return names


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer():
    assert {_part(p) for p in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_imports_follow_the_layering(path):
    part = _part(path)
    used = {n.split(".")[1] for n in _imports(path) if n.startswith("gsa.") and n.count(".") >= 1}
    used &= set(ALLOWED)  # "from gsa import data" and "from gsa.data import x" both name the part
    bad = used - ALLOWED[part] - {part}
    assert not bad, f"{path.relative_to(SRC)} ({part}) imports {sorted(bad)}; {part} may use {sorted(ALLOWED[part])}"
    if part in NO_PLOTTING:
        plotting = {n for n in _imports(path) if n.split(".")[0] in ("matplotlib", "seaborn", "plotly")}
        assert not plotting, f"{path.relative_to(SRC)} imports plotting libraries {sorted(plotting)}"


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    """The parser itself: a relative import two levels up and a lazy absolute import are both found."""
    pkg = SRC / "nn" / "backends" / "reference.py"
    assert "gsa.nn.backends" in _imports(pkg)
    assert any(n.startswith("gsa.nn.") for n in _imports(SRC / "models" / "gsanet.py"))
    assert "gsa.train.engine" in _imports(SRC / "cli.py")
