"""Device names resolved against this machine."""

import pytest
import torch

from gsa.errors import ConfigError
from gsa.train.device import resolve_device
from gsa.train.distributed import DistInfo


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("").type == resolve_device("auto").type


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu7'"):
        resolve_device("tpu7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_ddp_uses_the_local_rank():
    assert resolve_device("cuda", DistInfo(rank=0, local_rank=0, world_size=2)) == torch.device("cuda", 0)


@pytest.mark.parametrize(
    "cuda, mps, world, expected",
    [
        (True, True, 1, "cuda"),
        (False, True, 1, "mps"),
        (False, False, 1, "cpu"),
        (False, True, 2, "cpu"),
    ],
)
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, world, expected):
    """MPS only for one process: DDP has no MPS backend (gloo on the CPU instead)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    dist = DistInfo(rank=0, local_rank=0, world_size=world)
    assert resolve_device("auto", dist).type == expected
