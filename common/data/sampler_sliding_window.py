"""Smooth-AP's "sliding window" m-per-class batch sampler (Brown et al. 2020; ROADMAP/HAPPIER ``MPerClassSampler``).

Semantics, once per epoch:

1. shuffle the image list of every class and the order of the classes, once;
2. repeat: walk the class order and take the next ``m`` images of each of the first ``batch_size / m`` classes that
   still have at least ``m`` images left; if that fills a batch, emit it and walk again from the start; otherwise
   stop (the partial batch and the leftovers are dropped);
3. shuffle the order of the batches.

So consecutive batches share classes until those are exhausted ("sliding window" over the class order), and each
image appears at most once per epoch. Randomness comes from ``numpy.random.RandomState(seed + 1_000_003 * epoch)``:
``set_epoch`` reshuffles reproducibly. Under DDP every rank builds the same global list and keeps every
``world_size``-th batch. Factory signature for :class:`common.data.datamodule.RetrievalDataModule`:
``SlidingWindowMPerClassSampler(labels=..., batch_size=..., seed=..., rank=..., world_size=..., m=4)``.
"""

from __future__ import annotations

import numpy as np

from common.data.epoch_sampler import EpochBatchSampler
from common.data.errors import check_labels


def sliding_window_batches(
    pools: list[np.ndarray], order: np.ndarray, m: int, classes_per_batch: int
) -> list[list[int]]:
    """Step 2 above, deterministic: batches from already-shuffled class ``pools`` walked in class ``order``."""
    heads = np.zeros(len(pools), dtype=np.int64)  # next unused position in each class pool
    batches: list[list[int]] = []
    while True:
        batch: list[int] = []
        taken = 0
        for c in order:
            if taken == classes_per_batch:
                break
            if len(pools[c]) - heads[c] >= m:
                batch.extend(int(i) for i in pools[c][heads[c] : heads[c] + m])
                heads[c] += m
                taken += 1
        if taken < classes_per_batch:
            return batches
        batches.append(batch)


class SlidingWindowMPerClassSampler(EpochBatchSampler):
    """Batches of ``batch_size // m`` classes x ``m`` images, built as a sliding window over a shuffled class order."""

    def __init__(self, labels, batch_size: int, m: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        labels = check_labels(labels)
        flat = (labels[:, 0] if labels.ndim == 2 else labels).numpy()
        if m < 1 or batch_size % m != 0:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of m ({m})")
        self.classes_per_batch = batch_size // m
        classes, inverse = np.unique(flat, return_inverse=True)
        self.class_items = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        eligible = sum(len(items) >= m for items in self.class_items)
        if eligible < self.classes_per_batch:
            raise ValueError(
                f"only {eligible} classes have at least m={m} images, but a batch needs {self.classes_per_batch} "
                f"classes: lower batch_size or m"
            )
        super().__init__(batch_size, seed, rank, world_size)
        self.m = m
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def num_global_batches(self) -> int:
        """Batches of the current epoch: how many whole windows its shuffle leaves (it varies with the epoch)."""
        return len(self.global_batches())

    def global_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.RandomState(self.epoch_seed)
        pools = []
        for items in self.class_items:
            items = items.copy()
            rng.shuffle(items)
            pools.append(items)
        order = rng.permutation(len(pools))
        batches = sliding_window_batches(pools, order, self.m, self.classes_per_batch)
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
        self._cache = (self.epoch, batches)
        return batches
