import pytest
import torch

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
