"""The retrieval DataModule: train with a batch sampler, test as query/gallery.

Test protocols:
- one ``test_dataset``: every item is a query against all the others (``exclude_self``; SOP, CUB, iNat);
- ``query_dataset`` + ``gallery_dataset``: In-Shop style; the test dataloaders are ``[query, gallery]``.

:attr:`RetrievalDataModule.test_splits` names the test loaders (``test``, or ``query`` and ``gallery``; all of kind
``id``, see :mod:`common.data.splits`).

Every dataset returns dicts ``{"image", "label", "index"}`` and exposes ``labels`` (int64 ``[N]`` or ``[N, L]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from common.data.global_batch import RankSliceBatchSampler, local_batch_size, trainer_world
from common.data.resumable import ResumableDataLoader, SeededBatchSampler, SeededItems
from common.data.samplers import RandomBatchSampler
from common.data.splits import EvalSplit


class RetrievalDataModule(L.LightningDataModule):
    """Args:
    train_dataset: dataset with ``labels``.
    test_dataset: single-set protocol, or None with ``query_dataset`` and ``gallery_dataset``.
    val_dataset: optional validation set (single-set protocol); by default validation is off.
    batch_size: train batch size (also the eval batch size unless ``eval_batch_size``): the batch of each DDP rank,
        or with ``global_batch`` the batch of all ranks together.
    global_batch: ``batch_size`` is the global batch of one optimisation step (the paper rows' data configs; the
        original codes' DataParallel batch): under DDP the sampler draws global batches of ``batch_size`` items and
        each rank loads its ``batch_size / world_size`` slice (:mod:`common.data.global_batch`). A size that the world
        size does not divide, or a slice that would split a class's ``m`` items, is refused at setup.
    eval_batch_size: per-rank batch size of the evaluation loaders (no effect on results).
    sampler: ``_partial_`` batch-sampler factory called as ``sampler(labels=..., batch_size=..., seed=...,
        rank=..., world_size=...)`` (e.g. :class:`common.data.samplers.MPerClassBatchSampler`); None = shuffled.
    """

    def __init__(
        self,
        train_dataset: Dataset,
        test_dataset: Dataset | None = None,
        query_dataset: Dataset | None = None,
        gallery_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        sampler: Callable[..., Any] | None = None,
        seed: int = 0,
        global_batch: bool = False,
    ) -> None:
        super().__init__()
        if test_dataset is None and (query_dataset is None or gallery_dataset is None):
            raise ValueError("give either test_dataset, or both query_dataset and gallery_dataset")
        if test_dataset is not None and (query_dataset is not None or gallery_dataset is not None):
            raise ValueError("give test_dataset OR query_dataset/gallery_dataset, not both")
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.test_dataset, self.query_dataset, self.gallery_dataset = test_dataset, query_dataset, gallery_dataset
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.sampler_factory, self.seed, self.global_batch = sampler, seed, bool(global_batch)
        self.train_batch_sampler = None
        names = ["test"] if test_dataset is not None else ["query", "gallery"]
        self.test_splits = [EvalSplit(n, "id") for n in names]

    # --- DDP position (Lightning's trainer when attached, else single process) ---
    def _dist(self) -> tuple[int, int]:
        return trainer_world(self)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.local_batch_size()  # refuse a global batch that the world size does not divide, before any work

    def local_batch_size(self) -> int:
        """Train items per rank and step: ``batch_size``, or ``batch_size / world_size`` with ``global_batch``."""
        m = getattr(self.sampler_factory, "keywords", {}).get("m", 1)  # a ``_partial_`` P x K sampler's m
        return local_batch_size(self.batch_size, self._dist()[1], self.global_batch, m=int(m))

    def _loader(self, dataset: Dataset, shuffle: bool = False, batch_sampler=None) -> DataLoader:
        kw = dict(num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, **kw)
        rank, world = self._dist()
        sampler = DistributedSampler(dataset, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=shuffle, sampler=sampler, **kw)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._dist()
        labels = self.train_dataset.labels
        self.local_batch_size()  # checks a global batch against the world size
        # global batch: every rank draws the same global batches, then keeps its slice of each
        split = self.global_batch and world > 1
        s_rank, s_world = (0, 1) if split else (rank, world)
        if self.sampler_factory is not None:
            bs = self.sampler_factory(
                labels=labels, batch_size=self.batch_size, seed=self.seed, rank=s_rank, world_size=s_world
            )
        else:
            bs = RandomBatchSampler(len(labels), self.batch_size, seed=self.seed, rank=s_rank, world_size=s_world)
        if split:
            bs = RankSliceBatchSampler(bs, rank, world)
        epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        seeded = SeededBatchSampler(bs, seed=self.seed)
        seeded.set_epoch(epoch)
        self.train_batch_sampler = seeded
        return ResumableDataLoader(
            SeededItems(self.train_dataset),
            batch_sampler=seeded,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            progress_fn=self._batches_done,
        )

    def _batches_done(self) -> int:
        """Batches of the current epoch already trained on (read when a checkpoint is written); an epoch cut short by
        ``limit_train_batches`` counts as the whole epoch once its batches are done (the resume starts the next)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done if done < trainer.num_training_batches else max(done, len(self.train_batch_sampler))

    def val_dataloader(self):
        return self._loader(self.val_dataset) if self.val_dataset is not None else []

    def test_dataloader(self):
        if self.test_dataset is not None:
            return self._loader(self.test_dataset)
        return [self._loader(self.query_dataset), self._loader(self.gallery_dataset)]
