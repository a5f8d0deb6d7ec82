"""Optional dependencies: which extra of the ``gsa-nets`` distribution installs which module.

The core install (``pip install gsa-nets``: torch, numpy, safetensors, tqdm, platformdirs) is
enough for the layers, the models and their checkpoints. TensorBoard logs, plots and the PCam and
``folder:`` datasets need the ``[train]`` extra; :func:`require` imports such a module where it is
used, or stops with one line naming the extra::

    gsa: error: the rotation plot needs matplotlib, which is not installed: pip install "gsa-nets[train]"

This module imports nothing from gsa but :mod:`gsa.errors` (every layer may use it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["DISTRIBUTION", "OPTIONAL", "install_command", "require"]

#: the name of gsa on the package index (the import name is ``gsa``)
DISTRIBUTION = "gsa-nets"

#: top-level module -> (the package that provides it, the extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "train"),
    "tensorboard": ("tensorboard", "train"),
    "h5py": ("h5py", "train"),
    "PIL": ("Pillow", "train"),
    "triton": ("triton", "gpu"),
}


def install_command(extra: str) -> str:
    """The pip command that installs ``extra``, e.g. ``pip install "gsa-nets[train]"``."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.figure"``) for ``purpose`` (e.g. ``"the rotation plot"``).

    Raises:
        MissingDependencyError: the module's top-level package is not installed; one line naming
            the package and the extra that installs it. An import that fails for another reason
            (a broken installation) is raised as it is.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        package, extra = OPTIONAL.get(top, (top, "all"))
        raise MissingDependencyError(
            f"{purpose} needs {package}, which is not installed: {install_command(extra)}"
        ) from None
