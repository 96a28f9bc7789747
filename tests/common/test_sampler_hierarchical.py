"""Hierarchical two-super-class batch sampler: batch composition, counts per pair, replacement, epochs, DDP."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from common.data.global_batch import RankSliceBatchSampler
from common.data.sampler_hierarchical import HierarchicalBatchSampler


def make_labels():
    rows = []
    cls = 0
    for sup, n_classes in enumerate([3, 4, 2, 5]):
        for _ in range(n_classes):
            size = 1 if cls == 0 else 3 + cls % 4  # class 0 is tiny -> sampled with replacement
            rows += [[cls, sup]] * size
            cls += 1
    return torch.tensor(rows)


def test_batches_pair_two_super_classes_with_m_per_class():
    labels = make_labels()
    s = HierarchicalBatchSampler(labels, batch_size=8, m=2, batches_per_super_tuple=3, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 6 * 3  # C(4, 2) pairs x 3
    pair_counts = Counter()
    for b in batches:
        lab = labels[b].numpy()
        assert len(b) == 8
        halves = [lab[:4], lab[4:]]
        sup = tuple(int(h[0, 1]) for h in halves)
        assert all((h[:, 1] == h[0, 1]).all() for h in halves) and sup[0] != sup[1]
        pair_counts[tuple(sorted(sup))] += 1
        for h in halves:
            _, counts = np.unique(h[:, 0], return_counts=True)
            assert (counts == 2).all()  # m images per class, 2 classes per half
    assert pair_counts == {p: 3 for p in itertools.combinations(range(4), 2)}


def test_replacement_only_for_small_classes():
    labels = make_labels()
    s = HierarchicalBatchSampler(labels, batch_size=8, m=2, batches_per_super_tuple=20, seed=1)
    tiny_seen = False
    for b in s:
        for start in range(0, 8, 2):
            group = b[start : start + 2]
            c = int(labels[group[0], 0])
            if c == 0:
                tiny_seen = True
                assert group[0] == group[1]  # only one image: drawn twice
            else:
                assert group[0] != group[1]
    assert tiny_seen


def test_part_is_short_when_super_class_has_few_classes():
    labels = make_labels()
    s = HierarchicalBatchSampler(labels, batch_size=12, m=2, batches_per_super_tuple=1, seed=0)
    sizes = {len(b) for b in s}
    # super 2 has only 2 classes (4 images < part size 6), so batches with it are shorter
    assert sizes == {12, 10}


def test_ddp_refuses_short_batches_with_the_largest_batch_size_that_works():
    labels = make_labels()  # super 2 has 2 classes: with m=2, parts of 6 items come out short (4)
    with pytest.raises(ValueError, match=r"2 \(2 classes\).*data.batch_size <= 8 \(2 x m=2 x 2 classes\)"):
        HierarchicalBatchSampler(labels, batch_size=12, m=2, seed=0, rank=0, world_size=2)
    one = HierarchicalBatchSampler(labels, batch_size=12, m=2, seed=0)  # one process: short batches are fine
    with pytest.raises(ValueError, match="ranks would load different numbers of items"):
        RankSliceBatchSampler(one, rank=0, world_size=2)  # the global-batch split refuses it too
    ok = HierarchicalBatchSampler(labels, batch_size=8, m=2, seed=0)  # every super-class fills its part of 4
    sizes = [len(b) for r in range(2) for b in RankSliceBatchSampler(ok, rank=r, world_size=2)]
    assert set(sizes) == {4}
    HierarchicalBatchSampler(labels, batch_size=8, m=2, seed=0, rank=1, world_size=2)


def test_epochs_and_ddp():
    labels = make_labels()
    s = HierarchicalBatchSampler(labels, batch_size=8, m=2, batches_per_super_tuple=2, seed=4)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0
    r = [list(HierarchicalBatchSampler(labels, 8, 2, 2, seed=4, rank=k, world_size=2)) for k in range(2)]
    assert r[0] == e0[0::2] and r[1] == e0[1::2]


def test_errors():
    with pytest.raises(ValueError, match="levels=2"):
        HierarchicalBatchSampler(torch.tensor([0, 1, 2]), batch_size=4, m=2)
    with pytest.raises(ValueError, match="multiple of m"):
        HierarchicalBatchSampler(make_labels(), batch_size=6, m=2)
