"""HAPPIERLoss = (1 - lambda) Sup-H-AP + lambda clustering, with the proxies as checkpointed parameters."""

from __future__ import annotations

import pytest
import torch

from happier.losses import ClusterLoss, HAPPIERLoss, SupHAP


def _batch():
    g = torch.Generator().manual_seed(0)
    fine = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    labels = torch.stack([fine, fine // 2], dim=1)
    return torch.randn(8, 5, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_value_is_the_weighted_sum(lam: float) -> None:
    emb, labels = _batch()
    loss = HAPPIERLoss(num_classes=4, embedding_size=5, weight=lam).double()
    value = loss(emb, labels)
    hap = SupHAP()(emb, labels)
    clust = ClusterLoss(4, 5).double()
    clust.load_state_dict(loss.cluster.state_dict())
    want = (1 - lam) * hap + lam * clust(emb, labels)
    assert value.item() == pytest.approx(want.item(), rel=1e-12)
    assert loss.last_terms["sup_hap"].item() == pytest.approx(hap.item())


def test_proxies_are_trained_and_checkpointed() -> None:
    emb, labels = _batch()
    loss = HAPPIERLoss(num_classes=4, embedding_size=5).double()
    assert [n for n, _ in loss.named_parameters()] == ["cluster.proxies"]
    assert "cluster.proxies" in loss.state_dict()
    e = emb.clone().requires_grad_(True)
    loss(e, labels).backward()
    assert loss.cluster.proxies.grad.abs().sum() > 0 and e.grad.abs().sum() > 0
    # with a memory: Sup-H-AP ranks against it and still matches the plain module
    mem, mem_labels = emb.flip(0), labels.flip(0)
    got = loss(emb[:3], labels[:3], mem, mem_labels)
    want = 0.9 * SupHAP()(emb[:3], labels[:3], mem, mem_labels) + 0.1 * loss.cluster(emb[:3], labels[:3])
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_needs_sizes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        HAPPIERLoss()
    with pytest.raises(ValueError, match="lambda"):
        HAPPIERLoss(4, 5, weight=1.5)
