"""Batches for training and evaluation.

Two paths with the same sample order:

* **tensor** - small in-memory datasets are stacked once into two tensors and indexed
  directly (no DataLoader, no per-sample Python calls: much faster on CPU);
* **dataloader** - everything else goes through :class:`torch.utils.data.DataLoader`
  with ``--workers`` processes, per-worker seeds and a seeded generator.

The training order of epoch ``e`` comes from a :class:`DistributedSampler` (seed
``cfg.seed``, ``set_epoch(e)``) in both paths, also in a single process. It depends only
on (seed, epoch, world size), never on global RNG state, so a resumed run can skip the
batches it has already done and see exactly the same data, and one process with global
batch B sees, per step, the union of what N processes with B/N each see.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset, TensorDataset

# datasets up to this many bytes (as float32) are stacked into tensors when loader="auto"
TENSOR_PATH_MAX_BYTES = 1 << 30
TENSOR_PATH_MAX_ITEMS = 100_000


def _as_tensor_pair(dataset: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) if the dataset already holds them as tensors."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[0], dataset.tensors[1]
    method = getattr(dataset, "tensors", None)  # gsa.data.ArrayDataset.tensors()
    if callable(method) and getattr(dataset, "transform", None) is None:
        x, y = method()
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and len(x) == len(y) == len(dataset):
            return x, y
    for xi, yi in (("images", "labels"), ("data", "targets"), ("x", "y")):
        x, y = getattr(dataset, xi, None), getattr(dataset, yi, None)
        if (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.dim() == 4
            and len(x) == len(y) == len(dataset)
        ):
            if x.dtype.is_floating_point and getattr(dataset, "transform", None) is None:
                return x, y
    return None


def materialize(dataset: Any, *, force: bool = False) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Stack a small dataset into ``(images float32 (N,C,H,W), labels int64 (N,))``.

    Returns ``None`` when the dataset is too large (or has a random ``transform``) and
    ``force`` is false: the caller then uses a DataLoader.
    """
    if isinstance(dataset, Subset) and isinstance(dataset.indices, range) and dataset.indices.step == 1:
        base = materialize(dataset.dataset, force=force)  # a prefix of an in-memory dataset
        if base is not None:
            r = dataset.indices
            return base[0][r.start : r.stop], base[1][r.start : r.stop]
        return None
    pair = _as_tensor_pair(dataset)
    if pair is not None:
        x, y = pair
        return x.float(), y.long()
    n = len(dataset)
    if n == 0:
        return torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long)
    if not force:
        if n > TENSOR_PATH_MAX_ITEMS or getattr(dataset, "transform", None) is not None:
            return None
        first = dataset[0][0]
        if torch.as_tensor(first).numel() * 4 * n > TENSOR_PATH_MAX_BYTES:
            return None
    xs, ys = [], []
    for i in range(n):
        x, y = dataset[i]
        xs.append(torch.as_tensor(x, dtype=torch.float32))
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


class _SkipSampler(Sampler[int]):
    """The first ``skip`` indices of ``base`` dropped (to resume in the middle of an epoch)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 1_009 + rank) % (2**63))
    return g


@dataclass
class TrainBatches:
    """Training batches of one process for a given epoch (see module docstring)."""

    dataset: Any
    tensors: Optional[tuple[torch.Tensor, torch.Tensor]]
    batch_size: int  # per process
    seed: int
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    pin_memory: bool = False

    def _sampler(self, epoch: int) -> DistributedSampler:
        n = len(self.tensors[0]) if self.tensors is not None else len(self.dataset)
        sampler = DistributedSampler(
            range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=self.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        return sampler

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self._sampler(0)) / self.batch_size)

    def num_samples(self) -> int:
        """Samples per process per epoch."""
        return len(self._sampler(0))

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch, start_batch+1, ...`` of ``epoch`` (CPU tensors)."""
        sampler = self._sampler(epoch)
        if self.tensors is not None:
            order = torch.tensor(list(sampler), dtype=torch.long)[start_batch * self.batch_size :]
            images, labels = self.tensors
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                yield images[idx], labels[idx]
            return
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_SkipSampler(sampler, start_batch * self.batch_size),
            num_workers=self.workers,
            worker_init_fn=seed_worker if self.workers else None,
            generator=_epoch_generator(self.seed, epoch, self.rank),
            pin_memory=self.pin_memory,
            drop_last=False,
        )
        for x, y in loader:
            yield x.float(), y.long()


@dataclass
class EvalBatches:
    """Evaluation batches of one process: the first ``limit`` items, sharded ``rank::world``."""

    dataset: Any
    tensors: Optional[tuple[torch.Tensor, torch.Tensor]]
    batch_size: int
    limit: Optional[int] = None
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    pin_memory: bool = False

    @property
    def total(self) -> int:
        """Number of items evaluated over all processes."""
        n = len(self.tensors[0]) if self.tensors is not None else len(self.dataset)
        return n if self.limit is None else min(n, self.limit)

    def _indices(self) -> list[int]:
        return list(range(self.rank, self.total, self.world_size))

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        if self.tensors is not None:
            images, labels = self.tensors
            order = torch.tensor(idx, dtype=torch.long)
            if self.world_size == 1:  # contiguous slices, no gather copy
                total = self.total
                for i in range(0, total, self.batch_size):
                    j = min(i + self.batch_size, total)
                    yield images[i:j], labels[i:j]
                return
            for i in range(0, len(order), self.batch_size):
                sel = order[i : i + self.batch_size]
                yield images[sel], labels[sel]
            return
        loader = DataLoader(
            Subset(self.dataset, idx),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            worker_init_fn=seed_worker if self.workers else None,
            pin_memory=self.pin_memory,
        )
        for x, y in loader:
            yield x.float(), y.long()


def eval_limit(eval_subset: Optional[int], max_eval_batches: Optional[int], batch_size: int) -> Optional[int]:
    """Items to evaluate: ``--eval-subset`` and ``--max-eval-batches`` x eval batch size, whichever is smaller."""
    limits = [v for v in (eval_subset, None if max_eval_batches is None else max_eval_batches * batch_size) if v]
    return min(limits) if limits else None


def take(
    dataset: Any, tensors: Optional[tuple[torch.Tensor, torch.Tensor]], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items as tensors (for rotation curves and invariance checks)."""
    if tensors is not None:
        return tensors[0][:n], tensors[1][:n]
    n = min(n, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n))) if n else ((), ())
    if not xs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), torch.tensor([int(y) for y in ys])


def dataset_len(dataset: Any, tensors: Optional[Sequence[torch.Tensor]]) -> int:
    return len(tensors[0]) if tensors is not None else len(dataset)
