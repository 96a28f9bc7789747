"""Exact mid-epoch resume for training dataloaders.

Two pieces make a resumed run replay the batches of an uninterrupted one:

1. :class:`ResumableDataLoader` is *stateful* in Lightning's sense (``state_dict``/``load_state_dict``): the
   checkpoint stores how many batches of the current epoch were completed, and on resume the batch sampler skips
   them (Lightning restores its own loop counters; it calls ``load_state_dict`` only when restarting mid-epoch).
2. :class:`SeededItems` gives every item its own augmentation seed, derived from ``(seed, epoch, position in the
   epoch)``, and draws the item under a forked RNG. Augmentations therefore do not depend on how many items were
   loaded before (prefetching, worker count, skipped batches), and they leave the global RNG (dropout, the model's
   randomness; saved by :class:`common.callbacks.rng_state.RNGStateCallback`) untouched. The position is the item's
   place in the epoch's *global* list of batches (the batch sampler's ``item_offset``): under DDP no two ranks
   share a seed, and with ``data.global_batch`` an item is augmented exactly as in one process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _item_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + position * 104_729) % (2**31 - 1)


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Wrap a batch sampler: yields batches of ``(index, item_seed)`` and can skip the first batches once."""

    def __init__(self, batch_sampler: Sampler[list[int]], seed: int = 0) -> None:
        self.batch_sampler, self.seed = batch_sampler, seed
        self._skip = 0

    @property
    def epoch(self) -> int:
        return getattr(self.batch_sampler, "epoch", 0)

    @property
    def sampler(self) -> SeededBatchSampler:
        """Itself: Lightning advances the epoch of a loader through ``loader.batch_sampler.sampler.set_epoch`` (not
        ``loader.batch_sampler.set_epoch``), so without this every epoch would replay the order of the first."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def skip_next(self, num_batches: int) -> None:
        """The next iteration starts after ``num_batches`` batches (resume)."""
        self._skip = int(num_batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        offset = getattr(self.batch_sampler, "item_offset", None)
        for b, batch in enumerate(self.batch_sampler):
            if b < skip:
                continue
            start = offset(b, len(batch)) if offset is not None else b * len(batch)
            yield [(int(i), _item_seed(self.seed, epoch, start + k)) for k, i in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class SeededItems(Dataset):
    """Dataset wrapper taking ``(index, item_seed)`` keys: the item is drawn with torch/random/numpy seeded from
    ``item_seed``, under a forked RNG state. Attributes (``labels``...) are forwarded to the wrapped dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`SeededBatchSampler` whose state is the number of completed batches.

    Args:
        progress_fn: returns the number of batches of the current epoch already trained on (the datamodule reads it
            from the trainer's loop counters when the checkpoint is written).
    """

    def __init__(self, *args, progress_fn: Callable[[], int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress_fn = progress_fn

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        return {
            "epoch": getattr(sampler, "epoch", 0),
            "batches_done": int(self.progress_fn()) if self.progress_fn else 0,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the epoch and skip its done batches. Lightning builds (and prefetches from) the resumed iterator
        before it sets the epoch, so both are set here; a state saved at the end of an epoch resumes at the start of
        the next one."""
        sampler = self.batch_sampler
        if not isinstance(sampler, SeededBatchSampler):
            return
        epoch, done = int(state.get("epoch", sampler.epoch)), int(state.get("batches_done", 0))
        if done >= len(sampler):
            epoch, done = epoch + 1, 0
        sampler.set_epoch(epoch)
        sampler.skip_next(done)
