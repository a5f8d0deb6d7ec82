"""Equivariant self-attention layers and GSA-Net building blocks."""

from . import neighbourhood
from .attention import BACKENDS, GroupSelfAttention, LiftingSelfAttention

__all__ = ["LiftingSelfAttention", "GroupSelfAttention", "BACKENDS", "neighbourhood"]
