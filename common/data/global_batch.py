"""What ``data.batch_size`` means under DDP: the batch of one rank, or the global batch of all ranks together.

The original codes of the four methods ran on one GPU or under ``nn.DataParallel``, where the configured batch is
the batch of one optimisation step however many GPUs share it. Under DDP each process loads its own batch, so a
per-rank ``batch_size`` of B on N GPUs makes every step see N x B items. With ``global_batch: true`` (the data
configs of the paper rows) ``batch_size`` is the global batch and each of the ``world_size`` ranks loads
``batch_size / world_size`` of it:

* a datamodule with a plain shuffled loader (Lightning adds the ``DistributedSampler``) loads
  :func:`local_batch_size` items per rank;
* a batch sampler (the P x K class-balanced samplers of :mod:`common.data`) draws the same *global* batches of
  ``batch_size`` items on every rank, and :class:`RankSliceBatchSampler` hands rank r the r-th contiguous slice of
  each one, so the batch that the losses gather across ranks is exactly the sampler's global batch (the same classes,
  the same m items per class, the same number of steps per epoch as one process).

A size that does not divide is refused with an error that names the fix; so is a slice that would split the ``m``
items of a class between ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

__all__ = ["RankSliceBatchSampler", "local_batch_size", "trainer_world"]


def trainer_world(datamodule: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of the trainer attached to ``datamodule``; ``(0, 1)`` without one."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def local_batch_size(batch_size: int, world_size: int, global_batch: bool, m: int = 1) -> int:
    """Items that one rank loads per step: ``batch_size`` (per-rank semantics) or ``batch_size / world_size``.

    Args:
        batch_size: ``data.batch_size``.
        world_size: number of DDP processes (``trainer.world_size``).
        global_batch: ``data.global_batch``: True when ``batch_size`` is the batch of all ranks together.
        m: items per class of a class-balanced sampler; each rank's share must hold whole classes.
    """
    if batch_size < 1:
        raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
    if not global_batch or world_size == 1:
        return batch_size
    step = world_size * max(m, 1)  # sizes that give every rank whole classes
    lower, upper = batch_size - batch_size % step, batch_size + step - batch_size % step
    if batch_size % world_size:
        raise ValueError(
            f"data.global_batch is true, so data.batch_size={batch_size} is the batch of all {world_size} DDP ranks "
            f"together and must be divisible by the world size {world_size}: set data.batch_size to a multiple of "
            f"{step} (e.g. {upper}{f' or {lower}' if lower else ''}), run on a number of devices that divides "
            f"{batch_size}, or set data.global_batch=false to make batch_size the batch of each rank"
        )
    local = batch_size // world_size
    if m > 1 and local % m:
        raise ValueError(
            f"data.global_batch is true: each of the {world_size} ranks gets {local} of the {batch_size} items of a "
            f"batch, which would split the m={m} items of a class between ranks; use a data.batch_size that is a "
            f"multiple of world_size * m = {step} (e.g. {upper}{f' or {lower}' if lower else ''}), or a number of "
            f"devices that divides {batch_size // m}"
        )
    return local


class RankSliceBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s contiguous slice of each global batch drawn by ``batch_sampler``.

    ``batch_sampler`` must be built for one process (``rank=0, world_size=1``) with the global batch size, so that
    every rank draws the same global batches (the samplers of :mod:`common.data` are seeded from ``(seed, epoch)``).
    Its length (steps per epoch) and ``set_epoch`` pass through.
    """

    def __init__(self, batch_sampler: Sampler[list[int]], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size
        check = getattr(batch_sampler, "check_splittable", None)  # samplers whose batch size can vary refuse here
        if check is not None:
            check(world_size)

    @property
    def epoch(self) -> int:
        return getattr(self.batch_sampler, "epoch", 0)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            if len(batch) % self.world_size:
                raise ValueError(
                    f"a global batch of {len(batch)} items cannot be split evenly over {self.world_size} ranks; "
                    f"use a sampler whose batches all have a size divisible by the world size"
                )
            local = len(batch) // self.world_size
            yield list(batch[self.rank * local : (self.rank + 1) * local])

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def item_offset(self, b: int, n: int) -> int:
        """Position of the first item of this rank's slice (``n`` items) of global batch ``b`` in the epoch's item
        list: the same position that item has in one process, so each item gets the augmentation seed it would get
        there (:class:`common.data.resumable.SeededBatchSampler`)."""
        inner = getattr(self.batch_sampler, "item_offset", None)
        start = inner(b, n * self.world_size) if inner is not None else b * n * self.world_size
        return start + self.rank * n
