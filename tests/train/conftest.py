import contextlib
import os

import pytest
import torch

from gsa.train import checkpoint as ckpt
from gsa.train.hooks import use_hooks
from gsa.train.testing import toy_hooks


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def toy():
    """Train the tiny ToyNet on the toy rings dataset instead of a GSA-Net."""
    with use_hooks(toy_hooks()) as hooks:
        yield hooks


class Killed(BaseException):
    """Stands for a SIGKILL at an injected point (not an Exception: nothing catches it by accident)."""


class DyingOs:
    """``os`` as :mod:`gsa.train.checkpoint` sees it, killed just before its ``at``-th file-system
    step (an fsync, a rename/replace or a removal). A killed process runs nothing more, so from then
    on these steps do nothing (the clean-up in ``except`` blocks included); ``dead`` tells whether
    the kill happened (``False``: the code finished in fewer steps)."""

    STEPS = {"fsync", "replace", "unlink"}

    def __init__(self, at):
        self.at, self.count, self.dead, self.killed_at = at, 0, False, None

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args):
            if self.dead:
                return None
            self.count += 1
            if self.count == self.at:
                self.dead, self.killed_at = True, f"{name}{tuple(str(a) for a in args)}"
                raise Killed(self.killed_at)
            return real(*args)

        return step


@pytest.fixture
def kill_at():
    """``with kill_at(n) as dying:`` runs the block as if the process were killed (SIGKILL) just
    before the ``n``-th file-system step of :mod:`gsa.train.checkpoint`; the files stay as they were
    at that instant. Loop ``n`` from 1 until ``not dying.dead`` to visit every step of a protocol."""

    @contextlib.contextmanager
    def killing(at):
        dying = DyingOs(at)
        ckpt.os = dying
        try:
            yield dying
        except Killed:
            pass
        finally:
            ckpt.os = os

    return killing
