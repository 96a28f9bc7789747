"""XBM: FIFO and unique modes, enqueue-before-read, activation, checkpoint round trip, errors."""

from __future__ import annotations

import pytest
import torch

from roadmap.losses import SupAP
from roadmap.memory import XBM


def test_fifo_wraps_and_keeps_last_items():
    mem = XBM(size=5, embedding_dim=2)
    assert len(mem) == 0
    for step in range(3):  # 3 batches of 2 -> 6 items, the first one overwritten
        emb = torch.full((2, 2), float(step)) + torch.tensor([[0.0], [0.5]])
        mem.update(emb, torch.tensor([10 * step, 10 * step + 1]))
    z, y = mem.get()
    assert len(mem) == 5 and z.shape == (5, 2)
    assert sorted(y.tolist()) == [1, 10, 11, 20, 21]  # label 0 (the oldest) was overwritten
    assert mem.ptr.item() == 6 % 5


def test_fifo_batch_larger_than_memory():
    mem = XBM(size=3, embedding_dim=1)
    mem.update(torch.arange(5.0)[:, None], torch.arange(5))
    assert sorted(mem.get()[1].tolist()) == [2, 3, 4]


def test_unique_overwrites_by_dataset_index():
    mem = XBM(size=6, embedding_dim=2, unique=True)
    mem.update(torch.ones(2, 2), torch.tensor([0, 1]), torch.tensor([4, 1]))
    mem.update(torch.full((2, 2), 3.0), torch.tensor([0, 2]), torch.tensor([4, 5]))
    z, y = mem.get()
    assert len(mem) == 3
    assert y.tolist() == [1, 0, 2]  # slots 1, 4, 5 in order
    assert z[1].tolist() == [3.0, 3.0]  # index 4 holds its latest embedding
    with pytest.raises(ValueError, match="indices"):
        mem.update(torch.ones(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="train-set size"):
        mem.update(torch.ones(1, 2), torch.tensor([0]), torch.tensor([6]))


def test_update_detaches_and_enqueue_before_read_puts_query_in_memory():
    mem = XBM(size=8, embedding_dim=3)
    x = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    mem.update(x, labels)
    z, y = mem.get()
    assert not z.requires_grad
    # every query finds itself in the memory: with only this batch, the memory loss equals the in-batch loss
    # with the query counted as its own positive
    loss_mem = SupAP()(x, labels, z, y)
    loss_batch = SupAP(include_query=True)(x, labels)
    assert loss_mem.item() == pytest.approx(loss_batch.item(), abs=1e-6)
    loss_mem.backward()
    assert torch.isfinite(x.grad).all()


def test_activation_and_weight():
    mem = XBM(size=4, embedding_dim=2, weight=0.5, activate_after=3)
    assert mem.weight == 0.5
    assert [mem.is_active(e) for e in range(5)] == [False, False, False, True, True]


def test_state_dict_round_trip_and_hierarchical_labels():
    mem = XBM(size=4, embedding_dim=2, label_levels=2)
    mem.update(torch.randn(3, 2), torch.tensor([[0, 5], [1, 5], [2, 6]]))
    state = mem.state_dict()
    assert set(state) == {"embeddings", "labels", "filled", "ptr"}
    other = XBM(size=4, embedding_dim=2, label_levels=2)
    other.load_state_dict(state)
    z1, y1 = mem.get()
    z2, y2 = other.get()
    assert torch.equal(z1, z2) and torch.equal(y1, y2) and y2.shape == (3, 2)
    assert other.ptr.item() == 3
    other.reset()
    assert len(other) == 0


def test_shape_errors():
    mem = XBM(size=4, embedding_dim=2)
    with pytest.raises(ValueError, match="embeddings"):
        mem.update(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="label_levels"):
        mem.update(torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        XBM(size=0, embedding_dim=2)
