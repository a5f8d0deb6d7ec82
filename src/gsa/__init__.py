"""gsa: group equivariant stand-alone self-attention (Romero & Cordonnier, ICLR 2021)."""

from . import groups, nn

__version__ = "0.1.0"
__all__ = ["groups", "nn", "__version__"]
