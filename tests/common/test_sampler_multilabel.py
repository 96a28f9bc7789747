"""The m-per-label batch sampler for boolean multi-label data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.sampler_multilabel import MultiLabelMPerClassSampler


def _labels(n: int = 200, c: int = 10, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lab = rng.random((n, c)) < 0.2
    lab[np.arange(n), rng.integers(0, c, n)] = True  # every item has a label
    return torch.as_tensor(lab)


def test_batches_hold_m_items_per_label():
    labels = _labels()
    s = MultiLabelMPerClassSampler(labels, batch_size=32, m=4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 200 // 32
    lab = labels.numpy()
    for b in batches:
        assert len(b) == 32 and len(set(b)) == 32
        # the batch splits into 8 runs of 4 consecutive items that share a label
        for g in range(8):
            run = lab[b[4 * g : 4 * g + 4]]
            assert run.all(axis=0).any()


def test_epochs_and_ranks():
    labels = _labels()
    s = MultiLabelMPerClassSampler(labels, batch_size=16, m=2, seed=0)
    e0 = s.global_batches()
    assert s.global_batches() == e0  # reproducible
    s.set_epoch(1)
    assert s.global_batches() != e0
    s.set_epoch(0)
    r0 = list(MultiLabelMPerClassSampler(labels, batch_size=16, m=2, seed=0, rank=0, world_size=2))
    r1 = list(MultiLabelMPerClassSampler(labels, batch_size=16, m=2, seed=0, rank=1, world_size=2))
    assert r0 == e0[0::2][: len(r0)] and r1 == e0[1::2][: len(r1)] and len(r0) == len(r1)


def test_frequency_sampling_favours_frequent_labels():
    lab = np.zeros((400, 4), dtype=bool)
    lab[:, 0] = True  # label 0 on every item, labels 1-3 on 20 items each
    for c in range(1, 4):
        lab[20 * c : 20 * c + 20, c] = True

    def share_of_rare(mode: str) -> float:
        s = MultiLabelMPerClassSampler(torch.as_tensor(lab), batch_size=4, m=4, label_sampling=mode, seed=0)
        items = np.concatenate(s.global_batches())
        return float(lab[items, 1:].any(axis=1).mean())

    # one label per batch. Uniform: a rare label 3/4 of the time, so about 0.75 + 0.25 * 60/400 = 0.79 of the items
    # are rare; frequency: a rare label 60/460 of the time, about 0.13 + 0.87 * 0.15 = 0.26
    assert share_of_rare("uniform") > 0.6 > 0.4 > share_of_rare("frequency")


def test_errors():
    with pytest.raises(ValueError, match="boolean multi-hot"):
        MultiLabelMPerClassSampler(torch.zeros(10, dtype=torch.long), batch_size=4, m=2)
    with pytest.raises(ValueError, match="multiple"):
        MultiLabelMPerClassSampler(_labels(), batch_size=10, m=4)
    lab = _labels()
    lab[3] = False
    with pytest.raises(ValueError, match="item 3 has no label"):
        MultiLabelMPerClassSampler(lab, batch_size=8, m=2)
    with pytest.raises(ValueError, match="labels have at least"):
        MultiLabelMPerClassSampler(_labels(c=3), batch_size=16, m=4)
    with pytest.raises(ValueError, match="label_sampling"):
        MultiLabelMPerClassSampler(_labels(), batch_size=8, m=2, label_sampling="inverse")
