"""An m-per-label batch sampler for multi-label data (boolean ``[N, C]`` labels, e.g. MS-COCO's 80 objects).

The m-per-class samplers of :mod:`common.data.samplers` need one class per item. With several labels per item, a
batch is built label by label instead:

1. draw a label not used yet in this batch (uniformly among the labels that have at least ``m`` items, or in
   proportion to their number of items with ``label_sampling="frequency"``);
2. add ``m`` distinct items that carry it and are not in the batch yet (if fewer than ``m`` are left, skip the
   label and draw another);
3. repeat until the batch holds ``batch_size`` items (``batch_size // m`` labels).

Every item of a batch then shares at least one label with ``m - 1`` others, so rank losses always see positives;
items may share more labels by chance, which is what graded multi-label relevance rewards. An epoch has
``length_before_new_iter // batch_size`` batches (default: about one pass over the items); items are drawn with
replacement across batches. Randomness comes from ``numpy.random.RandomState(seed + 1_000_003 * epoch)``, so
``set_epoch`` reshuffles reproducibly; under DDP every rank draws the same global list and keeps every
``world_size``-th batch. Factory signature for :class:`common.data.datamodule.RetrievalDataModule`:
``MultiLabelMPerClassSampler(labels=..., batch_size=..., seed=..., rank=..., world_size=..., m=4)``.
"""

from __future__ import annotations

import numpy as np
import torch

from common.data.epoch_sampler import EpochBatchSampler
from common.data.errors import check_labels

LABEL_SAMPLING = ("uniform", "frequency")


class MultiLabelMPerClassSampler(EpochBatchSampler):
    """Batches of ``batch_size // m`` labels x ``m`` items carrying that label, from boolean ``[N, C]`` labels."""

    def __init__(
        self,
        labels,
        batch_size: int,
        m: int = 4,
        length_before_new_iter: int | None = None,
        label_sampling: str = "uniform",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = check_labels(labels, allow_multilabel=True)
        if labels.dtype != torch.bool:
            raise ValueError(
                f"MultiLabelMPerClassSampler needs boolean multi-hot labels [N, C], got {labels.dtype} "
                f"{tuple(labels.shape)}; single-label data takes common.data.samplers.MPerClassBatchSampler"
            )
        if m < 1 or batch_size % m != 0:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of m ({m})")
        if label_sampling not in LABEL_SAMPLING:
            raise ValueError(f"label_sampling must be one of {LABEL_SAMPLING}, got {label_sampling!r}")
        mat = labels.numpy()
        if not mat.any(axis=1).all():
            bad = int(np.flatnonzero(~mat.any(axis=1))[0])
            raise ValueError(f"item {bad} has no label; leave unlabelled items out of the training set")
        self.label_items = [np.flatnonzero(mat[:, c]) for c in range(mat.shape[1])]
        sizes = np.array([len(x) for x in self.label_items], dtype=np.int64)
        self.eligible = np.flatnonzero(sizes >= m)
        self.labels_per_batch = batch_size // m
        if len(self.eligible) < self.labels_per_batch:
            raise ValueError(
                f"only {len(self.eligible)} labels have at least m={m} items, but a batch needs "
                f"{self.labels_per_batch} labels: lower batch_size or m"
            )
        if batch_size > len(mat):
            raise ValueError(f"batch_size ({batch_size}) exceeds the {len(mat)} items")
        weights = sizes[self.eligible].astype(np.float64) if label_sampling == "frequency" else None
        self.label_p = None if weights is None else weights / weights.sum()
        length = length_before_new_iter or len(mat)
        super().__init__(batch_size, seed, rank, world_size)
        self.m, self.num_global_batches = m, max(length // batch_size, world_size)

    def _pick(self, rng: np.random.RandomState, pool: np.ndarray, used: set[int]) -> list[int] | None:
        """``m`` distinct items of ``pool`` not in ``used`` (None if fewer are left): rejection sampling, which is
        cheap because a batch is small next to most pools, then an exact draw among the free items if it stalls."""
        picked: list[int] = []
        for _ in range(4 * self.m):
            i = int(pool[rng.randint(len(pool))])
            if i not in used and i not in picked:
                picked.append(i)
                if len(picked) == self.m:
                    return picked
        free = np.array([i for i in pool.tolist() if i not in used], dtype=np.int64)
        if len(free) < self.m:
            return None
        return [int(i) for i in rng.choice(free, size=self.m, replace=False)]

    def _batch(self, rng: np.random.RandomState) -> list[int]:
        order = rng.choice(len(self.eligible), size=len(self.eligible), replace=False, p=self.label_p)
        batch: list[int] = []
        used: set[int] = set()
        for k in order:
            picked = self._pick(rng, self.label_items[self.eligible[k]], used)
            if picked is None:
                continue
            batch.extend(picked)
            used.update(picked)
            if len(batch) == self.batch_size:
                return batch
        raise ValueError(
            f"could not fill a batch of {self.batch_size} distinct items with {self.m} items per label (the labels "
            f"overlap too much); lower batch_size or m"
        )

    def global_batches(self) -> list[list[int]]:
        rng = np.random.RandomState(self.epoch_seed)
        return [self._batch(rng) for _ in range(self.num_global_batches)]
