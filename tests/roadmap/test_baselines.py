"""FastAP, BlackBox-AP, SoftBin-AP, triplet, multi-similarity, NSM, SupRecall, SupNDCG: values vs independent
computations (loops from the formulas or pytorch-metric-learning as oracle), gradients, degenerate batches."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from roadmap.blackbox_ap import BlackBoxRank, normalised_rank
from roadmap.losses import (
    BlackBoxAP,
    CalibrationLoss,
    FastAP,
    HeavisideAP,
    MultiSimilarityLoss,
    NormalizedSoftmaxLoss,
    SmoothAP,
    SoftBinAP,
    SupAP,
    SupAPStep,
    SupNDCG,
    SupRecall,
    TripletLoss,
)
from tests.roadmap.brute import h_minus, heav, normalize


def batch(B=12, D=8, C=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


def sims(emb, ref=None):
    q = normalize(emb.double())
    r = q if ref is None else normalize(ref.double())
    return q @ r.T


# ------------------------------------------------------------------ FastAP
def test_fastap_matches_pml_value_and_gradient():
    emb, labels = batch(B=16, C=4, seed=1)
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = FastAP(num_bins=10)(x1, labels)
    ref = pml_losses.FastAPLoss(num_bins=10)(x2, labels)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-10)
    ours.backward()
    ref.backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)


def brute_fastap(emb, labels, ref, ref_labels, bins=10):
    s = sims(emb, ref)
    delta = 4.0 / bins
    out = []
    for q in range(len(labels)):
        hp = [0.0] * (bins + 1)
        ha = [0.0] * (bins + 1)
        npos = 0
        for j in range(len(ref_labels)):
            d = max(0.0, 2 - 2 * float(s[q, j]))
            p = int(labels[q]) == int(ref_labels[j])
            npos += p
            for k in range(bins + 1):
                v = max(0.0, 1 - abs(d - 4.0 * k / bins) / delta)
                ha[k] += v
                hp[k] += v if p else 0.0
        if npos == 0:
            continue
        total, cp, ca = 0.0, 0.0, 0.0
        for k in range(bins + 1):
            cp += hp[k]
            ca += ha[k]
            if hp[k] * cp > 0 and ca > 0:
                total += hp[k] * cp / ca
        out.append(1 - total / npos)
    return sum(out) / len(out)


def test_fastap_with_reference_matches_loops_and_gradcheck():
    emb, labels = batch(B=6, D=4, C=2, seed=2)
    mem, ml = batch(B=9, D=4, C=2, seed=3)
    assert FastAP()(emb, labels, mem, ml).item() == pytest.approx(brute_fastap(emb, labels, mem, ml), abs=1e-10)
    assert torch.autograd.gradcheck(lambda x: FastAP()(x, labels, mem, ml), (emb.clone().requires_grad_(True),))


# ------------------------------------------------------------------ BlackBox-AP
def test_normalised_rank_hand_values():
    x = torch.tensor([[0.1, 0.9, 0.5, -0.2]])
    assert normalised_rank(x).tolist() == [[3 / 4, 1 / 4, 2 / 4, 4 / 4]]


def test_blackbox_rank_backward_is_the_interpolation_formula():
    x = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[0.0, 0.0, -0.2]], dtype=torch.float64)  # pushing item 2 up after lam * g
    lam = 4.0
    r = BlackBoxRank.apply(x, lam)
    (grad,) = torch.autograd.grad(r, x, g)
    # x + lam * g = [0.3, 0.2, -0.7] -> item 2 stays last: no change, zero gradient
    assert torch.equal(grad, torch.zeros_like(x))
    g2 = torch.tensor([[0.0, 0.0, 0.1]], dtype=torch.float64)  # x + 4 g = [0.3, 0.2, 0.5]: item 2 jumps to first
    (grad2,) = torch.autograd.grad(BlackBoxRank.apply(x, lam), x, g2)
    r0 = torch.tensor([[1, 2, 3]], dtype=torch.float64) / 3
    r1 = torch.tensor([[2, 3, 1]], dtype=torch.float64) / 3
    assert torch.allclose(grad2, -(r0 - r1) / lam)


@pytest.mark.parametrize("include_query", [True, False])
def test_blackbox_ap_forward_is_exact_ap_without_margin(include_query):
    emb, labels = batch(B=16, C=3, seed=4)
    bb = BlackBoxAP(margin=0.0, include_query=include_query)
    exact = HeavisideAP(include_query=include_query)(emb, labels)
    assert bb(emb, labels).item() == pytest.approx(exact.item(), abs=1e-12)
    mem, ml = batch(B=10, C=3, seed=5)
    assert bb(emb, labels, mem, ml).item() == pytest.approx(HeavisideAP()(emb, labels, mem, ml).item(), abs=1e-12)


def test_blackbox_margin_only_makes_the_loss_harder_and_grad_flows():
    emb, labels = batch(B=16, C=3, seed=6)
    torch.manual_seed(0)
    x = emb.clone().requires_grad_(True)
    train = BlackBoxAP(margin=0.02).train()(x, labels)
    evalv = BlackBoxAP(margin=0.02).eval()(emb, labels)
    assert train.item() >= evalv.item() - 1e-12
    train.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ SoftBin-AP
def naver_quantiser(s: float, nq: int, lo: float, hi: float) -> list[float]:
    """The original fixed conv: lines of slope -a / +a, first and last replaced by constants 1, then min, relu."""
    a = (nq - 1) / (hi - lo)
    first = [-a * s + (a * lo + (nq - k)) for k in range(nq)]
    second = [a * s + ((2 - nq + k) - a * lo) for k in range(nq)]
    first[0] = 1.0
    second[-1] = 1.0
    return [max(0.0, min(f, t)) for f, t in zip(first, second)]


def brute_softbin(emb, labels, nq=20, lo=-1.0, hi=1.0, include_query=True):
    s = sims(emb)
    aps = []
    for q in range(len(labels)):
        refs = [j for j in range(len(labels)) if include_query or j != q]
        cnt, pcnt = [0.0] * nq, [0.0] * nq
        for j in refs:
            qs = naver_quantiser(float(s[q, j]), nq, lo, hi)
            for k in range(nq):
                cnt[k] += qs[k]
                if int(labels[j]) == int(labels[q]):
                    pcnt[k] += qs[k]
        if sum(pcnt) == 0:
            continue
        ap, cp, ca = 0.0, 0.0, 0.0
        for k in range(nq):
            cp += pcnt[k]
            ca += cnt[k]
            ap += cp / (1e-16 + ca) * pcnt[k] / sum(pcnt)
        aps.append(ap)
    return 1 - sum(aps) / len(aps)


@pytest.mark.parametrize("include_query", [True, False])
def test_softbin_matches_the_original_quantiser(include_query):
    emb, labels = batch(seed=7)
    ours = SoftBinAP(include_query=include_query)(emb, labels).item()
    assert ours == pytest.approx(brute_softbin(emb, labels, include_query=include_query), abs=1e-10)


def test_softbin_gradcheck_and_perfect_ranking():
    emb, labels = batch(B=8, D=4, C=2, seed=8)
    assert torch.autograd.gradcheck(lambda x: SoftBinAP(nq=10)(x, labels), (emb.clone().requires_grad_(True),))
    # positives at s=1 and negatives at s=-1 fall in the first / last bin only: AP = 1 exactly
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert SoftBinAP()(e, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ triplet, MS
def brute_triplet(emb, labels, margin=0.05, semihard=True):
    s = sims(emb)
    terms = []
    B = len(labels)
    for a in range(B):
        for p in range(B):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(B):
                if labels[n] == labels[a]:
                    continue
                m = float(s[a, p] - s[a, n])
                if semihard and not (0 < m <= margin):
                    continue
                terms.append(max(0.0, float(s[a, n] - s[a, p]) + margin))
    nz = [t for t in terms if t > 0]
    return sum(nz) / len(nz) if nz else 0.0


@pytest.mark.parametrize("mining,margin", [("semihard", 0.2), ("all", 0.05)])
def test_triplet_matches_loops(mining, margin):
    emb, labels = batch(B=14, D=3, C=3, seed=10)
    got = TripletLoss(margin=margin, mining=mining)(emb, labels).item()
    assert got == pytest.approx(brute_triplet(emb, labels, margin, semihard=mining == "semihard"), abs=1e-10)


def brute_ms(emb, labels, alpha=2.0, beta=50.0, base=0.5, eps=0.1):
    s = sims(emb)
    B = len(labels)
    losses = []
    for a in range(B):
        pos = [float(s[a, j]) for j in range(B) if j != a and labels[j] == labels[a]]
        neg = [float(s[a, j]) for j in range(B) if labels[j] != labels[a]]
        if not pos or not neg:
            losses.append(0.0)
            continue
        kept_p = [v for v in pos if v - eps < max(neg)]
        kept_n = [v for v in neg if v + eps > min(pos)]
        lp = math.log(1 + sum(math.exp(-alpha * (v - base)) for v in kept_p)) / alpha if kept_p else 0.0
        ln = math.log(1 + sum(math.exp(beta * (v - base)) for v in kept_n)) / beta if kept_n else 0.0
        losses.append(lp + ln)
    return sum(losses) / len(losses)


def test_multi_similarity_matches_formula():
    emb, labels = batch(B=12, D=3, C=3, seed=11)
    assert MultiSimilarityLoss()(emb, labels).item() == pytest.approx(brute_ms(emb, labels), rel=1e-8)


def test_pair_losses_accept_a_reference_and_validate():
    emb, labels = batch(seed=12)
    mem, ml = batch(B=20, seed=13)
    for loss in (TripletLoss(), MultiSimilarityLoss()):
        v = loss(emb, labels, mem, ml)
        assert torch.isfinite(v)
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="weird")


# ------------------------------------------------------------------ NSM
def test_nsm_matches_pml_oracle_and_handles_memory():
    emb, labels = batch(B=10, D=6, C=5, seed=14)
    torch.manual_seed(0)
    ours = NormalizedSoftmaxLoss(num_classes=5, embedding_size=6).double()
    bound = 1 / math.sqrt(6)
    assert ours.proxies.abs().max() <= bound
    pml = pml_losses.NormalizedSoftmaxLoss(num_classes=5, embedding_size=6, temperature=0.05).double()
    with torch.no_grad():
        pml.W.copy_(ours.proxies.T)
    assert ours(emb, labels).item() == pytest.approx(pml(emb, labels).item(), rel=1e-10)
    assert ours(emb, labels, emb, labels).item() == 0.0
    with pytest.raises(ValueError, match="num_classes"):
        ours(emb, labels + 5)
    assert list(dict(ours.named_parameters())) == ["proxies"]


# ------------------------------------------------------------------ SupRank
def brute_pos_ranks(emb, labels, include_query=True, step=None):
    step = step or functools.partial(h_minus)
    s = sims(emb)
    B = len(labels)
    out = {}
    for q in range(B):
        refs = [j for j in range(B) if include_query or j != q]
        pos = [j for j in refs if labels[j] == labels[q]]
        out[q] = []
        for i in pos:
            r = 1.0
            for j in refs:
                if j == i:
                    continue
                d = float(s[q, j] - s[q, i])
                r += heav(d) if j in pos else step(d)
            out[q].append(r)
    return out


def sigm(z):
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("include_query", [True, False])
def test_suprecall_matches_loops(include_query):
    emb, labels = batch(B=14, C=3, seed=15)
    at_k = (1, 2, 4, 8, 16)
    ranks = brute_pos_ranks(emb, labels, include_query)
    vals = []
    for _q, rs in ranks.items():
        if not rs:
            continue
        vals.append(sum(sum(sigm(k - r) for r in rs) / min(len(rs), k) for k in at_k) / len(at_k))
    expected = 1 - sum(vals) / len(vals)
    assert SupRecall(include_query=include_query)(emb, labels).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("include_query", [True, False])
def test_supndcg_matches_loops(include_query):
    emb, labels = batch(B=14, C=3, seed=16)
    ranks = brute_pos_ranks(emb, labels, include_query)
    vals = []
    for _q, rs in ranks.items():
        if not rs:
            continue
        dcg = sum(1 / math.log2(1 + r) for r in rs)
        idcg = sum(1 / math.log2(1 + r) for r in range(1, len(rs) + 1))
        vals.append(dcg / idcg)
    expected = 1 - sum(vals) / len(vals)
    assert SupNDCG(include_query=include_query)(emb, labels).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(
    "make", [lambda: SupRecall(step=SupAPStep(tau=0.1, rho=3.0)), lambda: SupNDCG(step=SupAPStep(tau=0.1, rho=3.0))]
)
def test_suprank_gradcheck(make):
    emb, labels = batch(B=8, D=4, C=2, seed=17)
    loss = make()
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (emb.clone().requires_grad_(True),))


def test_suprank_perfect_ranking_gives_zero_ndcg_loss():
    labels = torch.arange(3).repeat_interleave(4)
    emb = torch.nn.functional.one_hot(labels, 3).double() + 0.001 * torch.randn(12, 3, dtype=torch.float64)
    assert SupNDCG()(emb, labels).item() == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------ degenerate batches
MAKERS = {
    "SupAP": SupAP,
    "SupAP_no_query": lambda: SupAP(include_query=False),
    "SmoothAP": SmoothAP,
    "CalibrationLoss": CalibrationLoss,
    **{m.__name__: m for m in (FastAP, BlackBoxAP, SoftBinAP, TripletLoss, MultiSimilarityLoss, SupRecall, SupNDCG)},
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=list(MAKERS))
@pytest.mark.parametrize("case", ["no_positives", "one_class", "duplicates", "single_item"])
def test_degenerate_batches_are_finite(make, case):
    torch.manual_seed(0)
    if case == "no_positives":
        emb, labels = torch.randn(6, 4), torch.arange(6)
    elif case == "one_class":
        emb, labels = torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
    elif case == "duplicates":
        emb, labels = torch.ones(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    else:
        emb, labels = torch.randn(1, 4), torch.zeros(1, dtype=torch.long)
    x = emb.clone().requires_grad_(True)
    loss = make()(x, labels)
    assert torch.isfinite(loss)
    if loss.requires_grad:
        loss.backward()
        assert x.grad is None or torch.isfinite(x.grad).all()


def test_nsm_degenerate_single_item():
    x = torch.randn(1, 4, requires_grad=True)
    loss = NormalizedSoftmaxLoss(3, 4)(x, torch.tensor([2]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("make", [MultiSimilarityLoss, lambda: TripletLoss(margin=0.3, mining="all")])
def test_pml_wrappers_gradcheck(make):
    emb, labels = batch(B=8, D=3, C=2, seed=18)
    loss = make()
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (emb.clone().requires_grad_(True),))
