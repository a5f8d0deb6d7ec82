"""gsa: group equivariant stand-alone self-attention (Romero & Cordonnier, ICLR 2021).

Subpackages: :mod:`gsa.groups` (finite groups and their actions), :mod:`gsa.nn` (lifting and group
self-attention layers, blocks), :mod:`gsa.scale` (the dilation group of App. E and its layers),
:mod:`gsa.models` (GSA-Nets and the paper's presets); every
user-facing error derives from :class:`gsa.errors.GsaError`.
"""

from . import openmp

openmp.configure()  # before the first import of torch: OpenMP reads its wait policy once, when loaded

from . import errors, groups, models, nn, scale  # noqa: E402
from .equivariance import check_equivariance  # noqa: E402

__version__ = "0.1.0"
__all__ = ["groups", "nn", "scale", "models", "errors", "check_equivariance", "__version__"]
