"""Batch samplers with epoch semantics, built on pytorch-metric-learning's samplers.

PML's samplers draw from a module-level NumPy RandomState. The wrappers here seed that state from
``(seed, epoch)`` on every ``__iter__``, so that:

- each epoch gives a different, reproducible order (``set_epoch`` is called by the datamodule each epoch);
- a resumed run replays the same batches from the same epoch;
- under DDP, every rank draws the same global list of batches and keeps every ``world_size``-th one, so each rank
  gets whole m-per-class groups and no batch is shared between ranks.

These semantics live in :class:`common.data.epoch_sampler.EpochBatchSampler`, the base of every batch sampler here.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_cf

from common.data.epoch_sampler import EpochBatchSampler
from common.data.errors import check_labels


class _SeededPML:
    """Context manager: PML's global NumPy RNG seeded for one epoch, restored afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.saved = pml_cf.NUMPY_RANDOM
        pml_cf.NUMPY_RANDOM = np.random.RandomState(self.seed)

    def __exit__(self, *exc) -> None:
        pml_cf.NUMPY_RANDOM = self.saved


class MPerClassBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` indices holding ``m`` items from each of ``batch_size // m`` classes.

    Args:
        labels: int labels ``[N]`` (or ``[N, L]``: column 0, the finest level, is used).
        m: items per class in a batch (classes with fewer than ``m`` items are sampled with replacement, as in PML).
        batch_size: must be a multiple of ``m``.
        length_before_new_iter: items per epoch (default: N rounded down to a whole number of batches).
        seed: base seed; the epoch is added.
        rank, world_size: DDP position; each rank keeps every ``world_size``-th batch of the shared global list.
    """

    def __init__(
        self,
        labels,
        m: int,
        batch_size: int,
        length_before_new_iter: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = check_labels(labels)
        self.labels = (labels[:, 0] if labels.ndim == 2 else labels).numpy()
        if batch_size % m != 0:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of m ({m})")
        n_classes = len(np.unique(self.labels))
        if batch_size // m > n_classes:
            raise ValueError(
                f"batch_size // m = {batch_size // m} classes per batch, but the dataset has only {n_classes} "
                f"classes: lower batch_size or raise m"
            )
        length = length_before_new_iter or len(self.labels)
        super().__init__(batch_size, seed, rank, world_size)
        self.m, self.num_global_batches = m, max(length // batch_size, world_size)

    def global_batches(self) -> list[list[int]]:
        length = self.num_global_batches * self.batch_size
        with _SeededPML(self.epoch_seed):
            sampler = MPerClassSampler(self.labels, self.m, batch_size=self.batch_size, length_before_new_iter=length)
            flat = list(iter(sampler))
        return [flat[i : i + self.batch_size] for i in range(0, len(flat), self.batch_size)]


class RandomBatchSampler(EpochBatchSampler):
    """Plain shuffled batches (drop_last), with the same epoch/DDP semantics as :class:`MPerClassBatchSampler`."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(batch_size, seed, rank, world_size)
        self.num_items, self.num_global_batches = num_items, max(num_items // batch_size, world_size)

    def global_batches(self) -> list[list[int]]:
        perm = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.epoch_seed)).tolist()
        return [perm[b * self.batch_size : (b + 1) * self.batch_size] for b in range(self.num_global_batches)]
