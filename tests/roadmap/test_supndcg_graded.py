"""SupNDCG with graded relevance on hierarchical ``[B, L]`` labels (the TPAMI NDCG configs).

Oracles, all written here from the definition and independent of ``roadmap/`` and ``common.ranking``:

* a loop implementation: relevance t = number of label columns two items share, gain 2^t - 1,
  rank(i) = 1 + sum_{j != i} (H^-(s_qj - s_qi) if t_j < t_i else H(s_qj - s_qi)), IDCG from the sorted gains;
* its central finite differences for the gradient;
* one case worked by hand (value and gradient);
* sklearn's ``ndcg_score`` for the exact-rank version (Heaviside step everywhere).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from common.ranking import Heaviside
from roadmap.losses import SupAPStep, SupNDCG
from tests.roadmap.brute import h_minus, heav, normalize

SMOOTH = {"tau": 0.1, "rho": 3.0}  # a gentler H^- so that finite differences are accurate


def hier_batch(B=12, D=6, fine_classes=6, levels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, D, generator=g, dtype=torch.float64)
    fine = torch.randint(0, fine_classes, (B,), generator=g)
    labels = torch.stack([fine // (2**lv) for lv in range(levels)], dim=1)  # nested: [fine, fine // 2, ...]
    return emb, labels


def brute_graded_ndcg_loss(emb, labels, ref=None, ref_labels=None, include_query=True, step=h_minus):
    """1 - mean_q DCG_q / IDCG_q by explicit loops; queries without a relevant item are skipped."""
    q = normalize(emb.double())
    r, rl, in_batch = (q, labels, True) if ref is None else (normalize(ref.double()), ref_labels, False)
    s = (q @ r.T).tolist()
    labels, rl = labels.tolist(), rl.tolist()
    vals = []
    for a in range(len(labels)):
        refs = [j for j in range(len(rl)) if not (in_batch and not include_query and j == a)]
        t = {j: sum(int(x == y) for x, y in zip(labels[a], rl[j], strict=True)) for j in refs}
        gain = {j: 2 ** t[j] - 1 for j in refs}
        if not any(gain.values()):
            continue
        dcg = 0.0
        for i in refs:
            if t[i] == 0:
                continue
            rank = 1.0
            for j in refs:
                if j != i:
                    d = s[a][j] - s[a][i]
                    rank += step(d) if t[j] < t[i] else heav(d)
            dcg += gain[i] / math.log2(1 + rank)
        ideal = sorted(gain.values(), reverse=True)
        idcg = sum(g / math.log2(1 + k) for k, g in enumerate(ideal, start=1))
        vals.append(dcg / idcg)
    return 1.0 - sum(vals) / len(vals) if vals else 0.0


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("include_query", [True, False])
def test_graded_value_matches_loops_in_batch(levels, include_query):
    emb, labels = hier_batch(B=14, levels=levels, seed=levels)
    expected = brute_graded_ndcg_loss(emb, labels, include_query=include_query)
    got = SupNDCG(include_query=include_query)(emb, labels).item()
    assert got == pytest.approx(expected, abs=1e-10)


def test_graded_value_matches_loops_against_a_memory():
    emb, labels = hier_batch(B=6, seed=3)
    ref, ref_labels = hier_batch(B=20, seed=4)
    ref_labels[-1] = torch.tensor([99, 99])  # an item irrelevant to every query
    expected = brute_graded_ndcg_loss(emb, labels, ref, ref_labels)
    got = SupNDCG()(emb, labels, ref, ref_labels).item()
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("include_query", [True, False])
def test_graded_gradient_matches_finite_differences_of_the_loops(include_query):
    emb, labels = hier_batch(B=8, D=4, seed=5)
    step = functools.partial(h_minus, **SMOOTH)
    x = emb.clone().requires_grad_(True)
    SupNDCG(step=SupAPStep(**SMOOTH), include_query=include_query)(x, labels).backward()
    eps, numeric = 1e-6, torch.zeros_like(emb)
    for idx in np.ndindex(*emb.shape):
        plus, minus = emb.clone(), emb.clone()
        plus[idx] += eps
        minus[idx] -= eps
        f_plus = brute_graded_ndcg_loss(plus, labels, include_query=include_query, step=step)
        f_minus = brute_graded_ndcg_loss(minus, labels, include_query=include_query, step=step)
        numeric[idx] = (f_plus - f_minus) / (2 * eps)
    assert numeric.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(x.grad, numeric, atol=1e-6, rtol=1e-5)


def test_hand_worked_case_value_and_gradient():
    """One query, labels [fine, coarse] = [0, 0], against three unit references (default H^-: rho 100, delta 0.05,
    offset 1.44). a = [0, 0] (t = 2, gain 3) at cosine 0.6; b = [1, 0] (t = 1, gain 1) at 0.8; c = [2, 1] (t = 0) at 0.9.

    rank(a) = 1 + H^-(0.8 - 0.6) + H^-(0.9 - 0.6) = 1 + (100 * 0.15 + 1.44) + (100 * 0.25 + 1.44) = 43.88
    rank(b) = 1 + H(0.6 - 0.8) + H^-(0.9 - 0.8) = 1 + 0 + (100 * 0.05 + 1.44) = 7.44
    DCG = 3 / log2(44.88) + 1 / log2(8.44),  IDCG = 3 / log2(2) + 1 / log2(3),  loss = 1 - DCG / IDCG.

    On the linear branch dH^-/dx = 100, so d rank(a) / d(s_a, s_b, s_c) = (-200, 100, 100) and
    d rank(b) / d(s_a, s_b, s_c) = (0, -100, 100) (H carries no gradient). With f_g(r) = g / log2(1 + r),
    f_g'(r) = -g / ((1 + r) ln 2 log2(1 + r)^2), dL/ds_j = -(f_3'(rank a) d rank(a)/ds_j + f_1'(rank b) d rank(b)/ds_j)
    / IDCG, and for unit vectors ds_j / dr_j = q - s_j r_j.
    """
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    cos = torch.tensor([0.6, 0.8, 0.9], dtype=torch.float64)
    refs = torch.stack([cos, (1 - cos**2).sqrt()], dim=1).requires_grad_(True)
    q_labels, ref_labels = torch.tensor([[0, 0]]), torch.tensor([[0, 0], [1, 0], [2, 1]])

    loss = SupNDCG()(q, q_labels, refs, ref_labels)
    loss.backward()

    rank_a, rank_b = 1 + (100 * 0.15 + 1.44) + (100 * 0.25 + 1.44), 1 + (100 * 0.05 + 1.44)
    assert (rank_a, rank_b) == pytest.approx((43.88, 7.44))
    idcg = 3.0 + 1.0 / math.log2(3.0)
    expected = 1.0 - (3.0 / math.log2(1 + rank_a) + 1.0 / math.log2(1 + rank_b)) / idcg
    assert loss.item() == pytest.approx(expected, abs=1e-12)

    def dfdr(g, r):
        return -g / ((1 + r) * math.log(2) * math.log2(1 + r) ** 2)

    d_rank_a, d_rank_b = (-200.0, 100.0, 100.0), (0.0, -100.0, 100.0)
    dl_ds = [-(dfdr(3, rank_a) * d_rank_a[j] + dfdr(1, rank_b) * d_rank_b[j]) / idcg for j in range(3)]
    expected_grad = torch.stack([dl_ds[j] * (q[0] - cos[j] * refs[j].detach()) for j in range(3)])
    torch.testing.assert_close(refs.grad, expected_grad, atol=1e-12, rtol=1e-9)

    # binary relevance on the fine column alone: only a is relevant, ideal DCG = 1
    binary = SupNDCG(graded=False)(q, q_labels, refs, ref_labels).item()
    assert binary == pytest.approx(1.0 - 1.0 / math.log2(1 + rank_a), abs=1e-12)


@pytest.mark.parametrize("include_query", [True, False])
def test_exact_step_gives_one_minus_sklearn_ndcg_with_exponential_gains(include_query):
    emb, labels = hier_batch(B=16, levels=3, seed=7)
    s = (normalize(emb) @ normalize(emb).T).numpy()
    t = (labels[:, None, :] == labels[None, :, :]).sum(-1).numpy()  # nested labels: shared levels
    per_query = []
    for a in range(len(labels)):
        keep = [j for j in range(len(labels)) if include_query or j != a]
        gains = 2.0 ** t[a, keep] - 1
        if gains.any():
            per_query.append(ndcg_score(gains[None], s[a, keep][None]))
    got = SupNDCG(step=Heaviside(), include_query=include_query)(emb, labels).item()
    assert got == pytest.approx(1.0 - float(np.mean(per_query)), abs=1e-10)


def test_graded_is_an_upper_bound_of_one_minus_exact_ndcg():
    for seed in range(5):
        emb, labels = hier_batch(B=16, levels=2, seed=10 + seed)
        assert SupNDCG()(emb, labels).item() >= SupNDCG(step=Heaviside())(emb, labels).item() - 1e-12


def test_flat_labels_are_unchanged_and_graded_false_keeps_column_0():
    emb, labels = hier_batch(B=14, levels=2, seed=8)
    fine = labels[:, 0]
    flat = SupNDCG()(emb, fine)
    assert torch.equal(flat, SupNDCG(graded=False)(emb, fine))
    assert torch.equal(flat, SupNDCG()(emb, fine[:, None]))  # [B, 1] is flat too
    assert torch.equal(flat, SupNDCG(graded=False)(emb, labels))  # binary on column 0 of [B, L]
    assert abs(SupNDCG()(emb, labels).item() - flat.item()) > 1e-3  # graded differs on hierarchical labels


def test_graded_chunked_equals_unchunked_value_and_gradient():
    emb, labels = hier_batch(B=14, levels=3, seed=9)
    grads, values = [], []
    for chunk in (None, 5):
        x = emb.clone().requires_grad_(True)
        value = SupNDCG(chunk_size=chunk)(x, labels)
        value.backward()
        values.append(value.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[0], values[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)


def test_graded_without_relevant_items_is_a_zero_with_graph():
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(5, 4, dtype=torch.float64)
    loss = SupNDCG()(q, torch.tensor([[0, 0], [1, 0], [2, 1]]), ref, torch.full((5, 2), 7))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_graded_gradcheck():
    emb, labels = hier_batch(B=8, D=4, levels=2, seed=11)
    loss = SupNDCG(step=SupAPStep(**SMOOTH))
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (emb.clone().requires_grad_(True),))
