"""Equivariant self-attention layers, the attention op and its backends, GSA-Net building blocks."""

from . import backends, functional, neighbourhood
from .attention import BACKENDS, GroupSelfAttention, LiftingSelfAttention
from .functional import group_attention

__all__ = [
    "LiftingSelfAttention",
    "GroupSelfAttention",
    "group_attention",
    "BACKENDS",
    "backends",
    "functional",
    "neighbourhood",
]
