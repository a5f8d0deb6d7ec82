import os

import pytest
import torch

# The CI machine has 2 cores; keep intra-op threads predictable.
torch.set_num_threads(int(os.environ.get("GSA_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
