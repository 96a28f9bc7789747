"""Tests for common/ranking.py: step functions, label relations and chunked rank sums vs brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from common.ranking import (
    Heaviside,
    Sigmoid,
    SupAPStep,
    ap_ranks,
    average_precision_from_ranks,
    heaviside,
    label_match,
    pairwise_rank_sums,
    per_query_mean,
    shared_levels,
    sigmoid_step,
    supap_step,
    valid_reference_mask,
)


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ---------------------------------------------------------------- step functions
def test_heaviside_values_and_no_grad():
    x = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    h = heaviside(x)
    assert h.tolist() == [0.0, 1.0, 1.0]
    assert not h.requires_grad
    assert Heaviside()(x).tolist() == [0.0, 1.0, 1.0]


def test_sigmoid_step_values_and_clamp():
    x = torch.tensor([-0.02, 0.0, 0.01, 10.0], dtype=torch.float64)
    out = sigmoid_step(x, tau=0.01)
    expected = [sig(-2.0), 0.5, sig(1.0), sig(50.0)]  # clamped at 50
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(Sigmoid(0.01)(x), out)
    with pytest.raises(ValueError):
        Sigmoid(0.0)


def test_supap_step_hand_values():
    x = torch.tensor([-0.01, 0.03, 0.1], dtype=torch.float64)
    # current code: rho (x - delta) + offset
    out = supap_step(x, tau=0.01, rho=100.0, delta=0.05, start=0.5, offset=1.44)
    assert torch.allclose(out, torch.tensor([sig(-1.0), 0.5 + sig(3.0), 100 * 0.05 + 1.44], dtype=torch.float64))
    # pre-PR#13 code: rho x + offset
    out_x = supap_step(x, tau=0.01, rho=100.0, delta=0.05, start=0.5, offset=1.44, linear_mode="x")
    assert out_x[2].item() == pytest.approx(100 * 0.1 + 1.44)
    assert torch.equal(out_x[:2], out[:2])
    # iNat config: start 0, offset 1
    out_inat = supap_step(x, tau=0.01, rho=100.0, delta=0.05, start=0.0, offset=1.0)
    assert out_inat[1].item() == pytest.approx(sig(3.0))
    assert out_inat[2].item() == pytest.approx(6.0)
    # taun_taup: different temperatures on each side
    out_t = supap_step(x, tau=(0.02, 0.01), rho=100.0, delta=0.05, start=0.5, offset=1.44)
    assert out_t[0].item() == pytest.approx(sig(-0.5))
    assert out_t[1].item() == pytest.approx(0.5 + sig(3.0))
    # delta=None: linear from 0
    out_n = supap_step(x, tau=0.01, rho=100.0, delta=None, start=0.5, offset=1.44)
    assert out_n[1].item() == pytest.approx(100 * 0.03 + 1.44)


def test_supap_step_offset_none_is_continuous_at_delta():
    delta = 0.05
    eps = 1e-9
    x = torch.tensor([delta, delta + eps], dtype=torch.float64)
    out = supap_step(x, offset=None)  # offset None -> sigma(delta/tau) + start
    assert out[0].item() == pytest.approx(sig(5.0) + 0.5)
    assert out[1].item() == pytest.approx(out[0].item(), abs=1e-6)
    # the config value 1.44 leaves a small drop at delta
    out_cfg = supap_step(x, offset=1.44)
    assert out_cfg[0].item() - out_cfg[1].item() == pytest.approx(sig(5.0) + 0.5 - 1.44, abs=1e-6)


def test_supap_step_defaults_are_the_paper_config_values():
    """One set of defaults: those of the SOP/CUB and HAPPIER configs (offset 1.44, current linear branch)."""
    assert SupAPStep() == SupAPStep(
        tau=0.01, rho=100.0, delta=0.05, start=0.5, offset=1.44, linear_mode="x_minus_delta"
    )
    x = torch.linspace(-0.2, 0.3, 101, dtype=torch.float64)
    assert torch.equal(supap_step(x), SupAPStep()(x))
    assert SupAPStep(tau=[0.02, 0.01]).tau == (0.02, 0.01)  # a YAML list becomes a tuple of floats


def test_supap_step_upper_bounds_heaviside_except_at_zero():
    x = torch.linspace(-1, 2, 20001, dtype=torch.float64)
    x = x[x != 0]
    for kwargs in ({"offset": None}, {"offset": 1.44}, {"offset": 1.44, "linear_mode": "x"}):
        assert bool((supap_step(x, **kwargs) >= heaviside(x)).all()), kwargs
    # start=0 (iNat) is NOT an upper bound on (0, delta]: see docs/methods/roadmap.md#formulas
    assert bool((supap_step(torch.tensor([0.01]), start=0.0, offset=1.0) < 1).all())


def test_supap_step_gradcheck_and_grad_values():
    # points away from the kinks at 0 and delta
    x = torch.tensor([-0.3, -0.004, 0.012, 0.04, 0.07, 0.5], dtype=torch.float64, requires_grad=True)
    for mode in ("x_minus_delta", "x"):
        assert torch.autograd.gradcheck(lambda t, m=mode: supap_step(t, tau=0.01, linear_mode=m, offset=1.44), (x,))
    g = torch.autograd.grad(supap_step(x, offset=1.44).sum(), x)[0]
    s = torch.sigmoid(x.detach() / 0.01)
    expected = s * (1 - s) / 0.01
    expected[4:] = 100.0  # rho on the linear part
    assert torch.allclose(g, expected)


def test_supapstep_validates_arguments():
    with pytest.raises(ValueError, match="linear_mode"):
        SupAPStep(linear_mode="bad")
    with pytest.raises(ValueError, match="tau"):
        SupAPStep(tau=-1.0)
    x = torch.tensor([0.1])
    assert torch.equal(SupAPStep(offset=1.44, linear_mode="x")(x), supap_step(x, offset=1.44, linear_mode="x"))


# ---------------------------------------------------------------- label relations
def test_label_match_and_shared_levels():
    q = torch.tensor([[0, 0], [1, 0], [2, 1]])
    r = torch.tensor([[0, 0], [1, 0], [3, 1], [2, 1]])
    lm = label_match(q, r)
    assert lm.tolist() == [[True, False, False, False], [False, True, False, False], [False, False, False, True]]
    assert torch.equal(label_match(q[:, 0], r[:, 0]), lm)
    sl = shared_levels(q, r)
    assert sl.tolist() == [[2, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 2]]
    # a level is shared only if every coarser level is shared too (tree convention)
    assert shared_levels(torch.tensor([[0, 5]]), torch.tensor([[1, 5]])).item() == 1
    assert shared_levels(torch.tensor([[0, 5]]), torch.tensor([[0, 6]])).item() == 0
    assert shared_levels(torch.tensor([3]), torch.tensor([3, 4])).tolist() == [[1, 0]]


def test_valid_reference_mask():
    v = valid_reference_mask(3, 5, exclude_self=True)
    assert v.sum().item() == 12 and not v[1, 1] and v[1, 4]
    assert valid_reference_mask(3, 5, exclude_self=False).all()


# ---------------------------------------------------------------- ranks vs brute force
def brute_ranks(scores, pos, valid, neg_step, pos_step):
    """Triple loop straight from the formula: rank(i) = 1 + sum_{j != i} R(s_qj - s_qi)."""
    out = {}
    Q, M = scores.shape
    for q in range(Q):
        for i in range(M):
            if not (pos[q, i] and valid[q, i]):
                continue
            rank, rank_pos = 1.0, 1.0
            for j in range(M):
                if j == i or not valid[q, j]:
                    continue
                d = scores[q, j] - scores[q, i]
                if pos[q, j]:
                    v = float(pos_step(d.reshape(1))[0])
                    rank += v
                    rank_pos += v
                else:
                    rank += float(neg_step(d.reshape(1))[0])
            out[(q, i)] = (rank, rank_pos)
    return out


def random_batch(B=12, D=6, C=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=1)
    labels = torch.randint(0, C, (B,), generator=g)
    return emb, labels


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize(
    "steps",
    [(SupAPStep(offset=1.44), heaviside), (Sigmoid(0.01), Sigmoid(0.01)), (heaviside, heaviside)],
    ids=["supap", "smooth", "exact"],
)
def test_ap_ranks_match_brute_force(exclude_self, chunk_size, steps):
    emb, labels = random_batch()
    scores = emb @ emb.T
    pos = label_match(labels, labels)
    valid = valid_reference_mask(len(labels), len(labels), exclude_self)
    neg_step, pos_step = steps
    out = ap_ranks(scores, pos, valid, neg_step=neg_step, pos_step=pos_step, chunk_size=chunk_size)
    ref = brute_ranks(scores, pos, valid, neg_step, pos_step)
    assert len(ref) == out.rank.numel()
    for p in range(out.rank.numel()):
        key = (int(out.q_idx[p]), int(out.i_idx[p]))
        assert out.rank[p].item() == pytest.approx(ref[key][0], abs=1e-9)
        assert out.rank_pos[p].item() == pytest.approx(ref[key][1], abs=1e-9)


def test_ap_ranks_rectangular_reference():
    emb, labels = random_batch(B=15, seed=3)
    q, r = emb[:5], emb[5:]
    scores = q @ r.T
    pos = label_match(labels[:5], labels[5:])
    step = SupAPStep(offset=1.44)
    out = ap_ranks(scores, pos, None, neg_step=step, chunk_size=3)
    ref = brute_ranks(scores, pos, torch.ones_like(pos), step, heaviside)
    for p in range(out.rank.numel()):
        assert out.rank[p].item() == pytest.approx(ref[(int(out.q_idx[p]), int(out.i_idx[p]))][0], abs=1e-9)


def test_exact_ap_matches_sklearn():
    emb, labels = random_batch(B=20, C=3, seed=1)
    scores = emb @ emb.T
    valid = valid_reference_mask(20, 20, exclude_self=True)
    out = ap_ranks(scores, label_match(labels, labels), valid)
    ap, has_pos = average_precision_from_ranks(out)
    for q in range(20):
        keep = valid[q].numpy()
        y = (labels == labels[q]).numpy()[keep]
        if y.sum() == 0:
            assert not has_pos[q]
            continue
        assert ap[q].item() == pytest.approx(average_precision_score(y, scores[q].numpy()[keep]), abs=1e-12)


def test_chunked_equals_unchunked_values_and_grads():
    emb, labels = random_batch(B=16, C=3, seed=2)
    x1 = emb.clone().requires_grad_(True)
    x2 = emb.clone().requires_grad_(True)
    step = SupAPStep(tau=0.05, offset=1.44)
    outs = []
    for x, cs in ((x1, None), (x2, 7)):
        s = x @ x.T
        r = ap_ranks(s, label_match(labels, labels), neg_step=step, chunk_size=cs)
        ap, _ = average_precision_from_ranks(r)
        ap.sum().backward()
        outs.append(ap.detach())
    assert torch.allclose(outs[0], outs[1], atol=1e-12)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-12)


def test_rank_gradcheck_float64():
    emb, labels = random_batch(B=8, D=4, C=2, seed=4)
    step = SupAPStep(tau=0.1, rho=3.0, offset=1.44)
    pos = label_match(labels, labels)

    def f(x):
        xn = torch.nn.functional.normalize(x, dim=1)
        r = ap_ranks(xn @ xn.T, pos, neg_step=step, chunk_size=5)
        return average_precision_from_ranks(r)[0]

    assert torch.autograd.gradcheck(f, (emb.clone().requires_grad_(True),))


def test_pairwise_rank_sums_generic_and_empty():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    q_idx, i_idx = torch.tensor([0, 1]), torch.tensor([2, 0])

    def fn(diff, qc, ic, not_i):
        return ((diff > 0) & not_i).sum(1).float(), diff.abs().sum(1)

    above, absum = pairwise_rank_sums(scores, q_idx, i_idx, fn, chunk_size=1)
    assert above.tolist() == [1.0, 2.0]
    assert absum.tolist() == pytest.approx([0.4 + 0.4, 0.6 + 0.1])
    empty = pairwise_rank_sums(scores, q_idx[:0], i_idx[:0], fn, chunk_size=4)
    assert all(e.numel() == 0 for e in empty)
    with pytest.raises(ValueError):
        pairwise_rank_sums(scores, q_idx, i_idx, fn, chunk_size=0)


def test_per_query_mean():
    m, c = per_query_mean(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]), 4)
    assert m.tolist() == [2.0, 0.0, 5.0, 0.0]
    assert c.tolist() == [2.0, 0.0, 1.0, 0.0]


def test_ap_ranks_shape_error():
    with pytest.raises(ValueError, match="same shape"):
        ap_ranks(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool))


def test_numpy_free_of_nan_on_ties():
    scores = torch.ones(4, 4)
    pos = torch.tensor(np.eye(4, dtype=bool))
    r = ap_ranks(scores, pos, neg_step=SupAPStep())
    assert torch.isfinite(r.rank).all()
