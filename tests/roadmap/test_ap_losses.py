"""SupAP / Smooth-AP / HeavisideAP / Calibration / ROADMAP: values vs loops, gradients, bound, degenerate batches."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from roadmap.losses import CalibrationLoss, HeavisideAP, SmoothAP, SupAP, SupAPStep
from tests.roadmap.brute import brute_ap_loss, brute_calibration, h_minus, heav, sig


def batch(B=12, D=8, C=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


SUPAP_CASES = [
    {"offset": None},
    {"offset": 1.44},
    {"offset": 1.44, "linear_mode": "x"},
    {"offset": 1.0, "start": 0.0},
    {"tau": 0.05, "rho": 10.0, "delta": 0.1, "offset": 1.2},
]


@pytest.mark.parametrize("kwargs", SUPAP_CASES)
@pytest.mark.parametrize("include_query", [True, False])
def test_supap_matches_brute_force(kwargs, include_query):
    emb, labels = batch()
    loss = SupAP(SupAPStep(**kwargs), include_query=include_query)(emb, labels)
    ref = brute_ap_loss(emb, labels, include_query=include_query, neg_step=functools.partial(h_minus, **kwargs))
    assert loss.item() == pytest.approx(ref, abs=1e-10)


def test_supap_with_memory_reference_matches_brute_force():
    emb, labels = batch(B=8, seed=1)
    mem, mem_labels = batch(B=20, seed=2)
    loss = SupAP(SupAPStep(offset=1.44))(emb, labels, mem, mem_labels)
    ref = brute_ap_loss(emb, labels, mem, mem_labels, neg_step=functools.partial(h_minus, offset=1.44))
    assert loss.item() == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("include_query", [True, False])
def test_smoothap_matches_brute_force(include_query):
    emb, labels = batch(seed=3)
    step = lambda x: sig(x / 0.01)
    loss = SmoothAP(tau=0.01, include_query=include_query)(emb, labels)
    assert loss.item() == pytest.approx(
        brute_ap_loss(emb, labels, include_query=include_query, neg_step=step, pos_step=step), abs=1e-10
    )


def test_heaviside_ap_is_one_minus_sklearn_map():
    emb, labels = batch(B=16, C=3, seed=4)
    e = emb / emb.norm(dim=1, keepdim=True)
    s = (e @ e.T).numpy()
    aps = []
    for q in range(16):
        keep = np.arange(16) != q
        y = (labels == labels[q]).numpy()[keep]
        if y.any():
            aps.append(average_precision_score(y, s[q][keep]))
    assert HeavisideAP(include_query=False)(emb, labels).item() == pytest.approx(1 - np.mean(aps), abs=1e-12)
    # include_query=True: the query is a positive with score 1 (ranked first)
    aps_q = [average_precision_score((labels == labels[q]).numpy(), s[q]) for q in range(16)]
    assert HeavisideAP(include_query=True)(emb, labels).item() == pytest.approx(1 - np.mean(aps_q), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cls_kwargs", [{"offset": None}, {"offset": 1.44}, {"offset": 1.44, "linear_mode": "x"}])
def test_supap_upper_bounds_one_minus_ap(seed, cls_kwargs):
    emb, labels = batch(B=32, D=16, C=6, seed=seed, dtype=torch.float32)
    for include_query in (True, False):
        sup = SupAP(SupAPStep(**cls_kwargs), include_query=include_query)(emb, labels)
        exact = HeavisideAP(include_query=include_query)(emb, labels)
        assert sup.item() >= exact.item() - 1e-6


def test_supap_bound_is_tight_when_ranking_is_perfect():
    # classes on orthogonal axes: every positive scores above every negative by > delta
    labels = torch.arange(4).repeat_interleave(3)
    emb = torch.nn.functional.one_hot(labels, 4).double() + 0.001 * torch.randn(12, 4, dtype=torch.float64)
    assert SupAP()(emb, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert HeavisideAP()(emb, labels).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SupAP(SupAPStep(tau=0.1, rho=3.0)),
        lambda: SmoothAP(tau=0.1),
        lambda: SupAP(SupAPStep(tau=0.1, offset=None)),
    ],
)
def test_ap_loss_gradcheck(make):
    emb, labels = batch(B=8, D=4, C=2, seed=5)
    loss = make()
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (emb.clone().requires_grad_(True),))
    mem, mem_labels = batch(B=6, D=4, C=2, seed=6)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, mem, mem_labels), (emb.clone().requires_grad_(True),))


def test_calibration_matches_brute_force_and_gradcheck():
    emb, labels = batch(B=10, D=3, C=3, seed=7)
    cal = CalibrationLoss()
    assert cal(emb, labels).item() == pytest.approx(brute_calibration(emb, labels), abs=1e-10)
    mem, ml = batch(B=7, D=3, C=3, seed=8)
    assert cal(emb, labels, mem, ml).item() == pytest.approx(brute_calibration(emb, labels, mem, ml), abs=1e-10)
    assert torch.autograd.gradcheck(lambda x: cal(x, labels), (emb.clone().requires_grad_(True),))


def test_calibration_averages_over_nonzero_terms_only():
    # two positives at s=0.5 (term 0.4 each) and one at s=1 (term 0): mean over non-zero = 0.4, not 0.8/3... etc.
    e = torch.tensor([[1.0, 0.0], [0.5, 0.75**0.5], [-1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # pairs: (0,1) pos s=.5 -> .4 ; (1,0) same ; neg (0,2) s=-1 -> 0 ; (1,2) s=-.5 -> 0 ; (2,0),(2,1) -> 0
    assert CalibrationLoss()(e, labels).item() == pytest.approx(0.4, abs=1e-12)


def test_chunked_path_equals_full_path():
    emb, labels = batch(B=24, C=4, seed=10)
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    l1 = SupAP()(x1, labels)
    l2 = SupAP(chunk_size=7)(x2, labels)
    l1.backward()
    l2.backward()
    assert abs(l1.item() - l2.item()) < 1e-12
    assert torch.allclose(x1.grad, x2.grad, atol=1e-12)


def test_no_positive_query_gives_zero_with_graph():
    x = torch.randn(5, 3, requires_grad=True)
    loss = SupAP(include_query=False)(x, torch.arange(5))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_one_class_supap_is_zero():
    # every reference is a positive, so rank = rank+ exactly
    assert SupAP()(torch.randn(6, 4), torch.zeros(6, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-7)


def test_heaviside_parts_carry_no_gradient():
    # exact AP: no gradient at all flows (HeavisideAP), and SupAP's gradient comes only from negatives
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    loss = HeavisideAP()(x, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert not loss.requires_grad or torch.autograd.grad(loss, x, allow_unused=True)[0] is None
    one_class = SupAP()(x, torch.zeros(6, dtype=torch.long))  # no negatives -> zero gradient
    g = torch.autograd.grad(one_class, x, allow_unused=True)[0]
    assert g is None or torch.equal(g, torch.zeros_like(x))


def test_fp16_inputs_are_computed_in_fp32():
    emb, labels = batch(seed=11, dtype=torch.float32)
    l16 = SupAP()(emb.half(), labels)
    assert l16.dtype == torch.float32 and torch.isfinite(l16)


def test_bad_inputs_raise_clear_errors():
    sup = SupAP()
    with pytest.raises(ValueError, match="labels must have shape"):
        sup(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        sup(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        sup(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="both"):
        sup(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(4, 3))
    with pytest.raises(ValueError, match="dim"):
        sup(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="linear_mode"):
        SupAP(SupAPStep(linear_mode="nope"))


def test_hierarchical_labels_use_finest_level():
    emb, labels = batch(seed=12)
    hier = torch.stack([labels, labels // 2], dim=1)
    assert SupAP()(emb, hier).item() == pytest.approx(SupAP()(emb, labels).item())


def test_heav_helper_sanity():
    assert heav(0.0) == 1.0 and heav(-1e-9) == 0.0


def test_losses_run_in_fp32_under_autocast():
    from roadmap.losses import FastAP, SupRecall, TripletLoss

    emb, labels = batch(B=16, seed=13, dtype=torch.float32)
    for loss in (SupAP(), CalibrationLoss(), SmoothAP(), FastAP(), SupRecall(), TripletLoss()):
        ref = loss(emb, labels)
        x = emb.bfloat16().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = loss(x, labels)
        assert out.dtype == torch.float32
        # same value as fp32 on the bf16-rounded inputs
        assert out.item() == pytest.approx(loss(x.detach().float(), labels).item(), abs=1e-6)
        assert abs(out.item() - ref.item()) < 0.2
        out.backward()
        assert x.grad is not None and x.grad.dtype == torch.bfloat16
