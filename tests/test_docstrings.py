"""Every public name of ``gsa`` and of its public submodules has a docstring.

Public = listed in the module's ``__all__`` (modules without ``__all__`` are skipped), not starting
with an underscore. Classes also need docstrings on their public methods and properties defined in
``gsa`` (inherited ``torch.nn.Module`` methods are not ours). Constants (tuples, dicts, numbers)
are documented in their module's docstring or with a ``#:`` comment and are not checked here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import gsa


def _public_modules() -> list[types.ModuleType]:
    mods = [gsa]
    for info in pkgutil.walk_packages(gsa.__path__, prefix="gsa."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def _missing() -> list[str]:
    missing: list[str] = []
    for mod in _public_modules():
        if not (mod.__doc__ or "").strip():
            missing.append(f"module {mod.__name__}")
        for name in getattr(mod, "__all__", ()):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
                continue  # constants
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj) and obj.__module__.startswith("gsa"):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(value, (classmethod, staticmethod)):
                        value = value.__func__
                    if not (isinstance(value, property) or inspect.isfunction(value)):
                        continue
                    # getdoc follows inheritance: an override of a documented method (forward, ...) is fine
                    if not (inspect.getdoc(getattr(obj, attr)) or "").strip():
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    return sorted(set(missing))


def test_public_modules_found():
    names = {m.__name__ for m in _public_modules()}
    assert {"gsa", "gsa.groups", "gsa.nn", "gsa.models", "gsa.data", "gsa.train", "gsa.viz"} <= names


def test_every_public_name_has_a_docstring():
    missing = _missing()
    assert not missing, "missing docstrings:\n  " + "\n  ".join(missing)
