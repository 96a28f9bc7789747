"""Smooth-AP sliding-window m-per-class batch sampler: exact semantics on a hand-worked case, epochs, DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.sampler_sliding_window import SlidingWindowMPerClassSampler, sliding_window_batches


def test_hand_worked_sliding_window():
    pools = [np.array([0, 1, 2, 3, 4, 5]), np.array([10, 11]), np.array([20, 21, 22, 23])]
    assert sliding_window_batches(pools, np.array([0, 1, 2]), m=2, classes_per_batch=2) == [
        [0, 1, 10, 11],
        [2, 3, 20, 21],
        [4, 5, 22, 23],
    ]
    # the class order matters: walking 2, 1, 0 leaves class 0 alone after two batches
    assert sliding_window_batches(pools, np.array([2, 1, 0]), m=2, classes_per_batch=2) == [
        [20, 21, 10, 11],
        [22, 23, 0, 1],
    ]
    # classes with fewer than m left are skipped; leftovers (odd image) dropped
    pools = [np.array([0, 1, 2]), np.array([5, 6, 7])]
    assert sliding_window_batches(pools, np.array([0, 1]), m=2, classes_per_batch=2) == [[0, 1, 5, 6]]


def labels_uneven():
    sizes = [9, 4, 12, 6, 5, 8, 3, 10]
    return torch.tensor(np.repeat(np.arange(len(sizes)), sizes))


def test_batches_are_m_per_class_without_repeats():
    labels = labels_uneven()
    s = SlidingWindowMPerClassSampler(labels, batch_size=8, m=2, seed=3)
    batches = list(s)
    assert len(batches) == len(s) > 0
    seen = set()
    for b in batches:
        assert len(b) == 8
        cls, counts = np.unique(labels[b].numpy(), return_counts=True)
        assert len(cls) == 4 and (counts == 2).all()
        assert not seen & set(b)
        seen |= set(b)


def test_number_of_batches_depends_on_the_class_order():
    # class sizes 3, 1, 2 with m=1 and 2 classes per batch: the walk gives 3 batches when class 0 comes first
    # ([0,1], [0,2], [0,2]), but 2 when it comes last ([2,1], [2,0], then class 0 alone): both occur over seeds
    labels = torch.tensor([0] * 3 + [1] * 1 + [2] * 2)
    lengths = set()
    for seed in range(30):
        batches = SlidingWindowMPerClassSampler(labels, batch_size=2, m=1, seed=seed).global_batches()
        used = np.bincount(labels[[i for b in batches for i in b]].numpy(), minlength=3)
        assert (used <= np.array([3, 1, 2])).all()
        assert all(len(set(labels[b].tolist())) == 2 for b in batches)
        lengths.add(len(batches))
    assert lengths == {2, 3}


def test_epochs_reshuffle_reproducibly():
    labels = labels_uneven()
    a = SlidingWindowMPerClassSampler(labels, batch_size=8, m=2, seed=1)
    b = SlidingWindowMPerClassSampler(labels, batch_size=8, m=2, seed=1)
    e0 = list(a)
    assert e0 == list(b)
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != e0
    a.set_epoch(0)
    assert list(a) == e0


def test_ddp_split_is_disjoint():
    labels = labels_uneven()
    full = SlidingWindowMPerClassSampler(labels, batch_size=4, m=2, seed=5).global_batches()
    r0 = list(SlidingWindowMPerClassSampler(labels, batch_size=4, m=2, seed=5, rank=0, world_size=2))
    r1 = list(SlidingWindowMPerClassSampler(labels, batch_size=4, m=2, seed=5, rank=1, world_size=2))
    assert len(r0) == len(r1) == len(full) // 2
    assert r0 == full[0 : 2 * len(r0) : 2] and r1 == full[1 : 2 * len(r1) : 2]


def test_errors():
    with pytest.raises(ValueError, match="multiple"):
        SlidingWindowMPerClassSampler(labels_uneven(), batch_size=7, m=2)
    with pytest.raises(ValueError, match="classes"):
        SlidingWindowMPerClassSampler(torch.tensor([0, 0, 1, 1]), batch_size=8, m=2)


def test_hierarchical_labels_use_column_zero():
    labels = labels_uneven()
    hier = torch.stack([labels, labels // 4], 1)
    assert list(SlidingWindowMPerClassSampler(hier, 8, 2, seed=2)) == list(
        SlidingWindowMPerClassSampler(labels, 8, 2, seed=2)
    )
