"""The upright ``rotmnist-mini`` digits the figures train on."""

from __future__ import annotations

from gsa.viz import digits


def test_upright_digits_are_upright():
    x, y = digits.upright_digits("valid")
    assert x.shape == (1000, 1, 28, 28) and y.shape == (1000,)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
