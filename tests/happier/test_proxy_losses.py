"""The normalised-softmax clustering loss (NSM, shared with roadmap/) and the CSL baseline against loop-based
computations from their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from happier.losses import CSLLoss
from happier.losses import NormalizedSoftmaxLoss as ClusterLoss


def _nsm_brute(emb: torch.Tensor, proxies: torch.Tensor, y: torch.Tensor, temp: float) -> float:
    total = 0.0
    for b in range(emb.shape[0]):
        e = emb[b].tolist()
        ne = math.sqrt(sum(v * v for v in e))
        logits = []
        for c in range(proxies.shape[0]):
            w = proxies[c].tolist()
            nw = math.sqrt(sum(v * v for v in w))
            logits.append(sum(a * b_ for a, b_ in zip(e, w)) / (ne * nw) / temp)
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        total += lse - logits[int(y[b])]
    return total / emb.shape[0]


def test_cluster_loss_matches_formula_and_uses_level() -> None:
    torch.manual_seed(0)
    loss = ClusterLoss(num_classes=5, embedding_size=4, temperature=0.05, hierarchy_level=1).double()
    emb = torch.randn(7, 4, dtype=torch.float64)
    labels = torch.stack([torch.randint(0, 11, (7,)), torch.randint(0, 5, (7,))], dim=1)
    got = loss(emb, labels).item()
    want = _nsm_brute(emb, loss.proxies.detach(), labels[:, 1], 0.05)
    assert got == pytest.approx(want, rel=1e-10)
    # using the wrong column gives a different value (the level is honoured)
    loss0 = ClusterLoss(num_classes=11, embedding_size=4, hierarchy_level=0).double()
    loss0.proxies.data[:5] = loss.proxies.data
    assert loss0(emb, labels).item() != pytest.approx(got)


def test_cluster_loss_gradcheck_and_state() -> None:
    torch.manual_seed(1)
    loss = ClusterLoss(num_classes=3, embedding_size=5, temperature=0.5).double()
    emb = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    assert torch.autograd.gradcheck(lambda e, w: _with_proxies(loss, w)(e, labels), (emb, loss.proxies))
    assert "proxies" in loss.state_dict() and isinstance(loss.proxies, torch.nn.Parameter)
    # proxies are seeded by a private generator: same seed, same proxies; global RNG untouched
    state = torch.get_rng_state()
    a, b = ClusterLoss(3, 5, seed=7), ClusterLoss(3, 5, seed=7)
    assert torch.equal(a.proxies, b.proxies)
    assert torch.equal(state, torch.get_rng_state())


def _with_proxies(module, w):
    def f(e, labels):
        module.proxies.data = w.data
        return module(e, labels)

    return f


def test_cluster_loss_rejects_bad_labels() -> None:
    loss = ClusterLoss(num_classes=3, embedding_size=2)
    with pytest.raises(ValueError, match="0..2"):
        loss(torch.randn(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        loss(torch.randn(2, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        loss(torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))


def _csl_brute(emb, proxies, labels, proxy_labels, margins, gamma) -> float:
    total = 0.0
    n = emb.shape[0]
    en = emb / emb.norm(dim=1, keepdim=True)
    pn = proxies / proxies.norm(dim=1, keepdim=True)
    for level, m in enumerate(margins):
        acc = 0.0
        for b in range(n):
            sims = [float(en[b] @ pn[p]) for p in range(proxies.shape[0])]
            negs = [gamma * sims[p] for p in range(len(sims)) if int(proxy_labels[p, level]) != int(labels[b, level])]
            if not negs:
                continue
            mx = max(negs)
            lse = mx + math.log(sum(math.exp(v - mx) for v in negs))
            z = lse - gamma * sims[int(labels[b, 0])] + gamma * m
            acc += math.log1p(math.exp(z)) if z < 30 else z
        total += acc / n
    return total


def test_csl_matches_formula() -> None:
    torch.manual_seed(2)
    hierarchy = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 1, 1], [4, 2, 1]])
    loss = CSLLoss(num_proxies=5, embedding_size=6, margins=[0.25, 0.35, 0.45], scale=32.0, hierarchy=hierarchy)
    loss = loss.double()
    idx = torch.tensor([0, 1, 2, 3, 4, 4, 2])
    labels = hierarchy[idx]
    emb = torch.randn(7, 6, dtype=torch.float64)
    got = loss(emb, labels).item()
    want = _csl_brute(emb, loss.proxies.detach(), labels, hierarchy, [0.25, 0.35, 0.45], 32.0)
    assert got == pytest.approx(want, rel=1e-9)
    loss.reduction = "mean"
    assert loss(emb, labels).item() == pytest.approx(want / 3, rel=1e-9)


def test_csl_gradcheck_learns_hierarchy_and_handles_no_negative() -> None:
    torch.manual_seed(3)
    loss = CSLLoss(num_proxies=3, embedding_size=4, margins=[0.1, 0.2], scale=2.0).double()
    # all items share the coarse label 0: no negative proxy at level 1 -> that level contributes 0
    labels = torch.tensor([[0, 0], [1, 0], [2, 0], [1, 0]])
    emb = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    value = loss(emb, labels)
    assert torch.equal(loss.proxy_labels, torch.tensor([[0, 0], [1, 0], [2, 0]]))
    assert "proxy_labels" in loss.state_dict()
    only_fine = _csl_brute(emb.detach(), loss.proxies.detach(), labels, loss.proxy_labels, [0.1, 0.2], 2.0)
    assert value.item() == pytest.approx(only_fine, rel=1e-9)
    value.backward()
    assert torch.isfinite(emb.grad).all()
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_csl_unknown_proxies_are_negatives_and_errors() -> None:
    loss = CSLLoss(num_proxies=4, embedding_size=3, margins=[0.1, 0.2])
    with pytest.raises(ValueError, match="margins"):
        loss(torch.randn(2, 3), torch.tensor([[0, 0, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="0..3"):
        loss(torch.randn(2, 3), torch.tensor([[0, 0], [4, 1]]))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        loss.register_labels(torch.tensor([0, 1]))
