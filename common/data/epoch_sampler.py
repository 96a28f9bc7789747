"""The epoch and DDP semantics that every batch sampler of ``common.data`` shares.

Each epoch draws one global list of batches from ``numpy``/``torch`` generators seeded with
``seed + 1_000_003 * epoch`` (:attr:`EpochBatchSampler.epoch_seed`), so that ``set_epoch`` reshuffles reproducibly
and a resumed run replays the same batches. Under DDP every rank draws the same list and rank ``r`` keeps batches
``r, r + world_size, ...``: whole batches (a class's ``m`` items stay together), none shared between ranks, and the
last ``len % world_size`` dropped so that every rank runs as many steps.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Base of the batch samplers: a subclass writes :meth:`global_batches` and sets :attr:`num_global_batches`.

    Args:
        batch_size: items per batch.
        seed: base seed; the epoch is added (:attr:`epoch_seed`).
        rank, world_size: DDP position; each rank keeps every ``world_size``-th batch of the global list.
    """

    num_global_batches: int  # batches per epoch before the split across ranks (an attribute, or a property)

    def __init__(self, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the next iteration draws with ``seed + 1_000_003 * epoch``."""
        self.epoch = epoch

    @property
    def epoch_seed(self) -> int:
        """The seed of the current epoch's draw, ``seed + 1_000_003 * epoch``."""
        return self.seed + 1_000_003 * self.epoch

    def global_batches(self) -> list[list[int]]:
        """All :attr:`num_global_batches` batches of the current epoch, before the split across ranks."""
        raise NotImplementedError(f"{type(self).__name__} must implement global_batches()")

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        usable = len(batches) - len(batches) % self.world_size
        yield from (batches[i] for i in range(self.rank, usable, self.world_size))

    def __len__(self) -> int:
        return self.num_global_batches // self.world_size

    def item_offset(self, b: int, n: int) -> int:
        """Position, in the epoch's global list of items, of the first item of the ``b``-th batch this rank yields
        (``n`` items): batch ``rank + b * world_size`` of the list, at ``batch_size`` items per batch. It seeds the
        items' augmentations (:class:`common.data.resumable.SeededBatchSampler`), so no two ranks share a seed."""
        return (self.rank + b * self.world_size) * self.batch_size
