import torch
from torch.utils.data import Dataset, TensorDataset

from gsa.train.loaders import EvalBatches, TrainBatches, eval_limit, materialize


def _data(n=40):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return TensorDataset(x, torch.arange(n))


class ListDataset(Dataset):
    """A plain map-style dataset (no tensors attribute) -> DataLoader path when forced."""

    def __init__(self, n):
        self.base = _data(n)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, int(y)


def _labels(batches):
    return [b[1].tolist() for b in batches]


def test_tensor_and_dataloader_paths_give_the_same_order():
    ds = _data()
    a = TrainBatches(ds, materialize(ds), 8, seed=3)
    b = TrainBatches(ListDataset(40), None, 8, seed=3)
    for epoch in (0, 1):
        assert _labels(a.epoch(epoch)) == _labels(b.epoch(epoch))
    assert _labels(a.epoch(0)) != _labels(a.epoch(1))  # reshuffled each epoch
    assert a.steps_per_epoch() == 5


def test_resume_skips_done_batches():
    ds = _data()
    tb = TrainBatches(ds, materialize(ds), 8, seed=0)
    full = _labels(tb.epoch(2))
    assert _labels(tb.epoch(2, start_batch=3)) == full[3:]
    dl = TrainBatches(ListDataset(40), None, 8, seed=0)
    assert _labels(dl.epoch(2, start_batch=3)) == full[3:]


def test_two_shards_together_equal_one_process():
    ds = _data()
    one = TrainBatches(ds, materialize(ds), 8, seed=5)
    shards = [TrainBatches(ds, materialize(ds), 4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for step, (full, b0, b1) in enumerate(zip(one.epoch(1), shards[0].epoch(1), shards[1].epoch(1))):
        assert sorted(full[1].tolist()) == sorted(b0[1].tolist() + b1[1].tolist()), step


def test_eval_batches_cover_the_subset_once_across_ranks():
    ds = _data(23)
    seen = []
    for r in range(3):
        seen += sum(_labels(EvalBatches(ds, materialize(ds), 4, limit=17, rank=r, world_size=3)), [])
    assert sorted(seen) == list(range(17))
    single = EvalBatches(ListDataset(23), None, 5, limit=None)
    assert sum(_labels(single), []) == list(range(23)) and len(single) == 5


def test_eval_limit():
    assert eval_limit(None, None, 10) is None
    assert eval_limit(50, None, 10) == 50
    assert eval_limit(None, 3, 10) == 30
    assert eval_limit(50, 3, 10) == 30


def test_materialize_uses_tensors_method_and_skips_transforms():
    class WithTensors(ListDataset):
        transform = None

        def tensors(self):
            return self.base.tensors[0].to(torch.uint8).float(), self.base.tensors[1]

    x, y = materialize(WithTensors(6))
    assert x.shape == (6, 1, 2, 2) and y.tolist() == list(range(6))

    class Augmented(ListDataset):
        transform = staticmethod(lambda t: t)

    assert materialize(Augmented(6)) is None  # random transforms must stay per-sample
    assert materialize(Augmented(6), force=True)[0].shape == (6, 1, 2, 2)


def test_materialize_prefix_subset():
    from torch.utils.data import Subset

    x, y = materialize(Subset(_data(10), range(4)))
    assert y.tolist() == [0, 1, 2, 3]
    assert materialize(Subset(ListDataset(10), range(4)), force=True)[1].tolist() == [0, 1, 2, 3]


def test_eval_limit_smaller_than_a_batch():
    ds = _data(23)
    for tensors in (materialize(ds), None):
        batches = list(EvalBatches(ds, tensors, 10, limit=7))
        assert sum(_labels(batches), []) == list(range(7))
