"""Hierarchical two-super-class batch sampler (ROADMAP ``HierarchicalSampler``; PML ``HierarchicalSampler``).

Semantics, once per epoch: for every combination of ``super_classes_per_batch``
(= 2) super-labels, build ``batches_per_super_tuple`` batches. Each batch has one part of
``batch_size / super_classes_per_batch`` indices per super-label: that super-label's classes are shuffled and
walked in order, adding ``m`` images of each class (sampled without replacement, or with replacement when the
class has fewer than ``m`` images) as long as they fit in the part. The whole list of batches is then shuffled.

SOP (12 categories): C(12, 2) = 66 pairs; ROADMAP B=128, m=4, 10 per pair = 660 batches/epoch; HAPPIER B=256,
5 per pair = 330. Randomness: ``numpy.random.RandomState(seed + 1_000_003 * epoch)``, so ``set_epoch`` reshuffles
reproducibly; under DDP each rank keeps every ``world_size``-th batch of the shared list.

A super-class with fewer than ``batch_size / (super_classes_per_batch * m)`` classes fills only part of its half, so
its batches are shorter (as in the original sampler). One process trains on them as they are; under DDP every rank
must hold the same number of items per step (the losses all-gather the batch), so the sampler refuses such a
configuration when ``world_size > 1``, or when :class:`common.data.global_batch.RankSliceBatchSampler` would split
its batches, with an error that names the super-classes and the largest batch size that works.
"""

from __future__ import annotations

import itertools

import numpy as np

from common.data.epoch_sampler import EpochBatchSampler
from common.data.errors import check_labels


class HierarchicalBatchSampler(EpochBatchSampler):
    """Batches drawn from pairs (tuples) of super-classes, ``m`` images per class.

    Args:
        labels: int ``[N, L]``; ``inner_label`` (default column 0) is the class, ``outer_label`` (default 1) the
            super-class.
        batch_size: divisible by ``super_classes_per_batch``, and each part by ``m``.
        m: images per class.
        batches_per_super_tuple: batches built for each combination of super-classes.
    """

    def __init__(
        self,
        labels,
        batch_size: int,
        m: int = 4,
        batches_per_super_tuple: int = 10,
        super_classes_per_batch: int = 2,
        inner_label: int = 0,
        outer_label: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = check_labels(labels)
        if labels.ndim != 2 or labels.shape[1] <= max(inner_label, outer_label):
            raise ValueError(
                f"HierarchicalBatchSampler needs labels [N, L] with class and super-class columns, got "
                f"{tuple(labels.shape)}; use the dataset with levels=2 (e.g. data.train_dataset.levels=2)"
            )
        if batch_size % super_classes_per_batch != 0:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by {super_classes_per_batch}")
        self.part_size = batch_size // super_classes_per_batch
        if self.part_size % m != 0:
            raise ValueError(f"batch_size / {super_classes_per_batch} = {self.part_size} must be a multiple of m={m}")
        lab = labels.numpy()
        supers = sorted(set(lab[:, outer_label].tolist()))
        if len(supers) < super_classes_per_batch:
            raise ValueError(
                f"{len(supers)} super-classes, fewer than super_classes_per_batch={super_classes_per_batch}"
            )
        self.super_to_classes: dict[int, list[np.ndarray]] = {}
        for s in supers:
            in_s = np.flatnonzero(lab[:, outer_label] == s)
            classes = sorted(set(lab[in_s, inner_label].tolist()))
            self.super_to_classes[s] = [in_s[lab[in_s, inner_label] == c] for c in classes]
        self.super_tuples = list(itertools.combinations(supers, super_classes_per_batch))
        super().__init__(batch_size, seed, rank, world_size)
        self.m, self.batches_per_super_tuple = m, batches_per_super_tuple
        self.super_classes_per_batch = super_classes_per_batch
        self.num_global_batches = len(self.super_tuples) * batches_per_super_tuple
        # super-classes whose part of a batch comes out short: {super-label: number of classes}
        self.short_supers = {s: len(c) for s, c in self.super_to_classes.items() if len(c) * m < self.part_size}
        self.check_splittable(world_size)

    def check_splittable(self, world_size: int) -> None:
        """Refuse batches of varying size when ``world_size`` ranks must each load the same number of items."""
        if world_size <= 1 or not self.short_supers:
            return
        fewest = min(self.short_supers.values())
        shown = ", ".join(f"{s} ({n} classes)" for s, n in sorted(self.short_supers.items())[:8])
        more = f" and {len(self.short_supers) - 8} more" if len(self.short_supers) > 8 else ""
        largest = self.super_classes_per_batch * self.m * fewest
        raise ValueError(
            f"HierarchicalBatchSampler under DDP ({world_size} ranks): super-class(es) {shown}{more} hold fewer than "
            f"batch_size / ({self.super_classes_per_batch} * m) = {self.part_size // self.m} classes, so their "
            f"batches come out shorter than {self.batch_size} items and the ranks would load different numbers of "
            f"items in one step (the losses all-gather equal batches). Use data.batch_size <= {largest} "
            f"({self.super_classes_per_batch} x m={self.m} x {fewest} classes), or train on one device"
        )

    def global_batches(self) -> list[list[int]]:
        rng = np.random.RandomState(self.epoch_seed)
        batches: list[list[int]] = []
        for combo in self.super_tuples:
            for _ in range(self.batches_per_super_tuple):
                batch: list[int] = []
                for s in combo:
                    part: list[int] = []
                    classes = self.super_to_classes[s]
                    for c in rng.permutation(len(classes)):
                        if len(part) + self.m > self.part_size:
                            break
                        items = classes[c]
                        part.extend(rng.choice(items, size=self.m, replace=len(items) < self.m).tolist())
                    batch.extend(part)
                batches.append(batch)
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]
