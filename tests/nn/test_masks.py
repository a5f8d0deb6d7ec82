"""``gsa.nn.masks``: the counter hash keyed by a device seed (a tensor) equals the int-keyed one."""

import pytest
import torch

from gsa.nn import masks

SEEDS = [0, 1, 123456789012345, 2**62 - 1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cid", [0, 7, 100003])
def test_a_tensor_seed_gives_the_int_seeds_keys_and_masks(seed, cid):
    want = masks.dropout_params(0.1, seed, cid)
    got = masks.dropout_params(0.1, torch.tensor(seed, dtype=torch.int64), cid)
    assert isinstance(got[1], torch.Tensor) and got[0] == want[0] and got[3] == want[3] == 1
    assert (int(got[1]), int(got[2])) == want[1:3]
    shape = (3, 4, 2, 5, 5)  # (pixels, H, Gk, Kx, Ky) of one query element
    a = masks.slice_mask(want, 1, 4, shape, "cpu", torch.empty(shape))
    b = masks.slice_mask(got, 1, 4, shape, "cpu", torch.empty(shape))
    assert torch.equal(a, b) and 0.8 < a.mean() < 1.0


def test_masks_from_a_tensor_seed_trace_without_host_round_trips():
    """``fullgraph=True`` refuses graph breaks, which ``.item()`` or a host copy of the seed would cause."""

    def keep(seed):
        return masks.keep_mask(masks.dropout_params(0.25, seed, 3), 10, (6, 40), seed.device)

    seed = torch.tensor(SEEDS[2])
    traced = torch.compile(keep, fullgraph=True, backend="eager")
    assert torch.equal(traced(seed), keep(seed))
    assert torch.equal(keep(seed), masks.keep_mask(masks.dropout_params(0.25, SEEDS[2], 3), 10, (6, 40), "cpu"))
