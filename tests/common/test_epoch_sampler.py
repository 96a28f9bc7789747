"""The epoch and DDP semantics that every batch sampler inherits from common.data.epoch_sampler.EpochBatchSampler."""

from __future__ import annotations

import pytest
import torch

from common.data.epoch_sampler import EpochBatchSampler
from common.data.sampler_hierarchical import HierarchicalBatchSampler
from common.data.sampler_multilabel import MultiLabelMPerClassSampler
from common.data.sampler_sliding_window import SlidingWindowMPerClassSampler
from common.data.samplers import MPerClassBatchSampler, RandomBatchSampler

_gen = torch.Generator().manual_seed(0)
FINE = torch.randint(0, 20, (200,), generator=_gen)
TWO_LEVELS = torch.stack([FINE, FINE // 5], 1)
MULTI = torch.rand(200, 8, generator=_gen) < 0.3
MULTI[:, 0] |= ~MULTI.any(1)  # every item has a label

SAMPLERS = {
    "m_per_class": lambda **kw: MPerClassBatchSampler(TWO_LEVELS, m=4, batch_size=16, **kw),
    "random": lambda **kw: RandomBatchSampler(200, 16, **kw),
    "multilabel": lambda **kw: MultiLabelMPerClassSampler(MULTI, batch_size=8, m=2, **kw),
    "sliding_window": lambda **kw: SlidingWindowMPerClassSampler(FINE, batch_size=8, m=2, **kw),
    "hierarchical": lambda **kw: HierarchicalBatchSampler(
        TWO_LEVELS, batch_size=16, m=2, batches_per_super_tuple=3, **kw
    ),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_ranks_split_the_global_batches_of_the_epoch(name):
    make = SAMPLERS[name]
    one = make(seed=3)
    assert isinstance(one, EpochBatchSampler)
    one.set_epoch(2)
    world = 3
    ranks = [make(seed=3, rank=r, world_size=world) for r in range(world)]
    for s in ranks:
        s.set_epoch(2)
    global_batches = [list(map(int, b)) for b in one]
    usable = len(global_batches) - len(global_batches) % world
    for r, s in enumerate(ranks):
        assert [list(map(int, b)) for b in s] == global_batches[r:usable:world]
        assert len(s) == one.num_global_batches // world == len(list(s))
    assert len(one) == one.num_global_batches == len(global_batches)


@pytest.mark.parametrize("name", SAMPLERS)
def test_set_epoch_reshuffles_and_replays(name):
    s = SAMPLERS[name](seed=5)
    first = [list(map(int, b)) for b in s]
    assert [list(map(int, b)) for b in s] == first  # same epoch: same batches
    s.set_epoch(1)
    assert s.epoch_seed == 5 + 1_000_003
    assert [list(map(int, b)) for b in s] != first
