"""common.metrics.relevance: shared levels, pop / map / multi-label relevance, on chunks of queries."""

from __future__ import annotations

import pytest
import torch

from common.metrics.relevance import (
    level_counts,
    multilabel_shared,
    pop_weights,
    relevance,
    relevance_table,
    shared_levels,
)


def test_shared_levels_follow_the_tree_from_the_coarsest_column():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (40, 3), generator=gen)  # ids reused under different parents
    t = shared_levels(labels, labels)
    for i in range(40):
        for j in range(40):
            expected = 0
            for col in (2, 1, 0):
                if labels[i, col] != labels[j, col]:
                    break
                expected += 1
            assert t[i, j] == expected
    # same fine id under different super-classes shares nothing
    assert shared_levels(torch.tensor([[0, 0]]), torch.tensor([[0, 1]])).item() == 0
    assert shared_levels(torch.tensor([3, 4]), torch.tensor([3, 3, 4])).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_pop_relevance_hand_worked():
    # query's gallery: 2 items of the same class (t=2), 3 of the same super-class (t=1), 4 unrelated (t=0)
    q = torch.tensor([[0, 0]])
    g = torch.tensor([[0, 0]] * 2 + [[1, 0], [2, 0], [3, 0]] + [[4, 1]] * 4)
    rel = relevance(q, g)
    assert rel[0].tolist() == pytest.approx([1.0] * 2 + [1 / 3] * 3 + [0.0] * 4)  # w = [0, 1, 2]
    rel2 = relevance(q, g, alpha=2.0)
    assert rel2[0].tolist() == pytest.approx([2.0] * 2 + [1 / 3] * 3 + [0.0] * 4)  # w = [0, 1, 4]
    assert pop_weights(3).tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5])
    # each level carries its weight in total, whatever its size
    assert rel[0, :2].sum().item() == pytest.approx(2.0) and rel[0, 2:5].sum().item() == pytest.approx(1.0)


def test_map_relevance_hand_worked():
    q = torch.tensor([[0, 0]])
    g = torch.tensor([[0, 0]] * 2 + [[1, 0], [2, 0], [3, 0]] + [[4, 1]] * 4)
    rel = relevance(q, g, kind="map", alpha=[1.0, 1.0])
    # #{t >= 1} = 5, #{t >= 2} = 2: rel(1) = 1/5, rel(2) = 1/5 + 1/2
    assert rel[0].tolist() == pytest.approx([0.7] * 2 + [0.2] * 3 + [0.0] * 4)
    with pytest.raises(ValueError, match="one weight per level"):
        relevance(q, g, kind="map", alpha=[1.0])
    with pytest.raises(ValueError, match="weight per level as alpha"):
        relevance(q, g, kind="map", alpha=1.0)


def test_relevance_on_a_chunk_equals_rows_of_the_full_matrix_and_valid_mask_counts():
    gen = torch.Generator().manual_seed(1)
    fine = torch.randint(0, 10, (30,), generator=gen)
    labels = torch.stack([fine, fine // 3, fine // 6], 1)
    full = relevance(labels, labels)
    chunk = relevance(labels[7:12], labels)
    torch.testing.assert_close(chunk, full[7:12])
    valid = ~torch.eye(30, dtype=torch.bool)
    rel = relevance(labels, labels, valid=valid)
    assert (rel.diagonal() == 0).all()
    t = shared_levels(labels, labels)
    for q in (0, 5, 29):
        for lv in range(1, 4):
            members = (t[q] == lv) & valid[q]
            if members.any():  # the level's mass w_l is split among the valid items of that level
                assert rel[q, members].sum().item() == pytest.approx((lv / 2) ** 1.0)


def test_extra_counts_add_the_query_at_the_finest_level():
    levels = torch.tensor([[2, 2, 1, 0]])
    extra = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    table = relevance_table(levels, 2, extra_counts=extra)
    assert table[0].tolist() == pytest.approx([0.0, 1.0, 2.0 / 3.0])
    assert level_counts(levels, 2)[0].tolist() == [1.0, 1.0, 2.0]


def test_multilabel_shared_and_relevance():
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(12, 6, generator=gen) < 0.4
    t = multilabel_shared(a, a)
    for i in range(12):
        for j in range(12):
            assert t[i, j] == int((a[i] & a[j]).sum())
    rel = relevance(a, a)
    for q in range(12):
        for lv in range(1, 7):
            members = t[q] == lv
            if members.any():
                assert rel[q, members].sum().item() == pytest.approx(lv / 5)  # w_l = l / (C - 1)
    assert (rel[t == 0] == 0).all()


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="levels"):
        shared_levels(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        relevance(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown relevance"):
        relevance(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), kind="dcg")
