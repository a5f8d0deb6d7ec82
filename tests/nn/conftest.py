"""Shared helpers of the layer tests."""

import pytest
import torch

from gsa.nn import LiftingSelfAttention


def _random_input(layer, B=2, X=7, Y=6, dtype=torch.float64):
    """A random input of the layer's kind: ``(B, C, X, Y)`` for lifting, ``(B, C, |H|, X, Y)`` otherwise."""
    if isinstance(layer, LiftingSelfAttention):
        return torch.randn(B, layer.in_channels, X, Y, dtype=dtype)
    return torch.randn(B, layer.in_channels, layer.group.order, X, Y, dtype=dtype)


@pytest.fixture
def layer_input():
    """:func:`_random_input`: ``layer_input(layer, B=2, X=7, Y=6, dtype=torch.float64)``."""
    return _random_input
