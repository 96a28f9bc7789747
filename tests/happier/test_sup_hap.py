"""Sup-H-AP against loop-based H-AP / Sup-H-AP computations, sklearn AP, gradcheck and invariances."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from common.ranking import SupAPStep
from happier.sup_hap import SupHAP, hrank_step
from tests.happier import _brute


def _hier_batch(seed: int, b: int = 10, d: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, 5, (b,), generator=g)
    coarse_of = torch.tensor([0, 0, 1, 1, 2])
    top_of = torch.tensor([0, 0, 1])
    mid = coarse_of[fine]
    labels = torch.stack([fine, mid, top_of[mid]], dim=1)  # [B, 3], nested
    emb = torch.randn(b, d, generator=g, dtype=dtype)
    return emb, labels


@pytest.mark.parametrize("include_query", [True, False])
def test_exact_mode_is_one_minus_hap(include_query: bool) -> None:
    emb, labels = _hier_batch(0)
    loss = SupHAP(exact=True, include_query=include_query)(emb, labels).item()
    want = _brute.loss_brute(emb, labels, include_query=include_query)
    assert loss == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"with_hrank": True},
        {"start": 0.0, "offset": 1.0},
        {"offset": None, "linear_mode": "x", "tau": 0.05},
    ],
)
@pytest.mark.parametrize("include_query", [True, False])
def test_smooth_value_matches_bruteforce(params: dict, include_query: bool) -> None:
    emb, labels = _hier_batch(1, b=9)
    step = SupAPStep(**{k: v for k, v in params.items() if k != "with_hrank"})
    module = SupHAP(step, include_query=include_query, chunk_size=7, with_hrank=params.get("with_hrank", False))
    got = module(emb, labels).item()
    hm = {k: v for k, v in params.items() if k in ("tau", "start", "offset", "linear_mode")}
    lower = functools.partial(_brute.h_minus, **hm)
    higher = _brute.h_rank_step if params.get("with_hrank") else _brute.step_h
    want = _brute.loss_brute(emb, labels, include_query=include_query, lower=lower, higher_h=higher)
    assert got == pytest.approx(want, rel=1e-9)


def test_memory_reference_matches_bruteforce() -> None:
    emb, labels = _hier_batch(2, b=4)
    mem, mem_labels = _hier_batch(3, b=11)
    got = SupHAP(with_hrank=True)(emb, labels, mem, mem_labels).item()
    lower = _brute.h_minus
    want = _brute.loss_brute(emb, labels, mem, mem_labels, lower=lower, higher_h=_brute.h_rank_step)
    assert got == pytest.approx(want, rel=1e-9)


def test_chunking_does_not_change_value_or_gradient() -> None:
    emb, labels = _hier_batch(4, b=12)
    grads, values = [], []
    for chunk in (None, 5, 1):
        e = emb.clone().requires_grad_(True)
        v = SupHAP(with_hrank=True, chunk_size=chunk)(e, labels)
        v.backward()
        values.append(v.item())
        grads.append(e.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-12) == pytest.approx(values[2], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])


def test_gradcheck_smooth_parts() -> None:
    emb, labels = _hier_batch(5, b=7, d=4)
    emb.requires_grad_(True)
    # a larger tau keeps finite differences away from the steep parts; the formula is the same
    module = SupHAP(SupAPStep(tau=0.2, delta=0.3, offset=None), with_hrank=True, beta=2.0, gamma=0.5, leak=3.0)
    assert torch.autograd.gradcheck(lambda e: module(e, labels), (emb,), eps=1e-6, atol=1e-5)
    # the gradient is not zero: the H^- and H-rank steps carry it
    emb.grad = None
    module(emb, labels).backward()
    assert emb.grad.abs().sum() > 0


def test_binary_levels_give_average_precision() -> None:
    """L = 1 and H everywhere: H-AP is AP; checked against sklearn (query left out of its own ranking)."""
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,), generator=g)
    module = SupHAP(exact=True, include_query=False)
    hap, has = module.per_query_hap(emb, labels)
    e = torch.nn.functional.normalize(emb, dim=1).numpy()
    s = e @ e.T
    for q in range(12):
        keep = np.arange(12) != q
        y = (labels.numpy()[keep] == labels.numpy()[q]).astype(int)
        if y.sum() == 0:
            assert not has[q]
            continue
        assert hap[q].item() == pytest.approx(average_precision_score(y, s[q, keep]), rel=1e-10)


def test_hap_invariant_to_relevance_scale() -> None:
    emb, labels = _hier_batch(7)
    base = SupHAP(relevance="map", alpha=[1.0, 0.5, 0.25], with_hrank=True)(emb, labels).item()
    scaled = SupHAP(relevance="map", alpha=[4.0, 2.0, 1.0], with_hrank=True)(emb, labels).item()
    other = SupHAP(relevance="map", alpha=[1.0, 1.0, 1.0], with_hrank=True)(emb, labels).item()
    assert base == pytest.approx(scaled, rel=1e-12)
    assert base != pytest.approx(other, rel=1e-6)
    # and the loop reference agrees for a scaled relevance
    want = _brute.loss_brute(
        emb, labels, rel_fn=lambda lv: [7.0 * r for r in _brute.pop_relevance(lv, 3)], lower=_brute.h_minus
    )
    assert SupHAP()(emb, labels).item() == pytest.approx(want, rel=1e-9)


def test_perfect_hierarchical_ranking_scores_zero_exact_loss() -> None:
    # items on a line: same fine class together, then same coarse; scores ordered by shared levels
    labels = torch.tensor([[0, 0], [0, 0], [1, 0], [2, 1]])
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.8, 0.6], [-1.0, 0.1]], dtype=torch.float64)
    module = SupHAP(exact=True, include_query=True)
    hap, _ = module.per_query_hap(emb[:1], labels[:1], emb, labels)
    assert hap.item() == pytest.approx(1.0)


def test_hrank_step_shape() -> None:
    x = torch.tensor([-0.2, 0.0, 0.01, 0.5], dtype=torch.float64)
    torch.testing.assert_close(hrank_step(x), torch.tensor([-2.0, 0.0, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(hrank_step(x, gamma=2.0), torch.tensor([-2.0, 0.0, 1.0, 1.0], dtype=torch.float64))


def test_errors_are_clear() -> None:
    module = SupHAP()
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        module(torch.randn(3, 2), torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="rows"):
        module(torch.randn(3, 2), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="both"):
        module(torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.long), ref_embeddings=torch.randn(3, 2))
    with pytest.raises(ValueError, match="memory must match"):
        module(torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.long), torch.randn(3, 2), torch.zeros(3, 1).long())


@pytest.mark.parametrize("include_query", [True, False])
@pytest.mark.parametrize("params", [{"offset": 1.44}, {"offset": 1.0, "start": 0.0, "linear_mode": "x"}])
def test_single_level_equals_roadmap_supap(include_query: bool, params: dict) -> None:
    """With one level (binary relevance) Sup-H-AP is SupAP: same value and same gradient.

    The test may import both packages; happier/ itself never imports roadmap/.
    """
    from roadmap.losses import SupAP

    g = torch.Generator().manual_seed(8)
    labels = torch.randint(0, 4, (16,), generator=g)
    labels[:4] = torch.tensor([0, 0, 1, 1])  # every query has a positive besides itself
    labels[4:8] = torch.tensor([2, 2, 3, 3])
    emb = torch.randn(16, 8, generator=g, dtype=torch.float64)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = SupHAP(SupAPStep(**params), include_query=include_query, chunk_size=11)(e1, labels[:, None])
    theirs = SupAP(SupAPStep(**params), include_query=include_query)(e2, labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(e1.grad, e2.grad)


def test_multilabel_relevance_matches_bruteforce() -> None:
    """Multi-label extension: t = number of shared labels, pop relevance with L = C."""
    g = torch.Generator().manual_seed(9)
    labels = torch.rand(9, 4, generator=g) < 0.5
    emb = torch.randn(9, 5, generator=g, dtype=torch.float64)
    got = SupHAP(include_query=False, with_hrank=True)(emb, labels).item()
    e = [_brute._unit(v) for v in emb.tolist()]
    lab = labels.tolist()
    vals = []
    for q in range(9):
        idx = [j for j in range(9) if j != q]
        scores = [sum(a * b for a, b in zip(e[q], e[j])) for j in idx]
        levels = [sum(int(a and b) for a, b in zip(lab[q], lab[j])) for j in idx]
        v = _brute.hap_row(
            scores, levels, _brute.pop_relevance(levels, 4), lower=_brute.h_minus, higher_h=_brute.h_rank_step
        )
        if v is not None:
            vals.append(1 - v)
    assert got == pytest.approx(sum(vals) / len(vals), rel=1e-9)


@pytest.mark.parametrize("include_query", [True, False])
def test_exact_mode_agrees_with_common_metric(include_query: bool) -> None:
    """Cross-check with the independent evaluation code (common.metrics.retrieval, sorting-based H-AP)."""
    from common.metrics.retrieval import retrieval_metrics

    emb, labels = _hier_batch(10, b=14)
    hap, has = SupHAP(exact=True, include_query=include_query).per_query_hap(emb, labels)
    res = retrieval_metrics(
        emb, labels, metrics=("hap",), exclude_self=not include_query, count_self_in_relevance=False, per_query=True
    )
    theirs = res["per_query"]["hap"]
    assert torch.allclose(hap[has], theirs[has].to(hap.dtype), rtol=1e-9)


def test_never_builds_a_cubic_tensor() -> None:
    """Forward and backward allocate at most chunk x M elements per tensor, far below B^3."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class MaxNumel(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.max = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.max = max(self.max, t.numel())
            return out

    b = 48
    fine = torch.arange(12).repeat_interleave(4)
    labels = torch.stack([fine, fine // 2], dim=1)
    emb = torch.randn(b, 8, dtype=torch.float64, requires_grad=True)
    # unchunked: P x M pairs (P = relevant (query, item) pairs, here 8 per query); chunked: the B x M score and level
    # matrices are the largest tensors
    for max_elems, bound in ((1 << 22, b * b * b // 4), (10 * b, b * b)):
        emb.grad = None
        mode = MaxNumel()
        with mode:
            SupHAP(with_hrank=True, max_chunk_elements=max_elems)(emb, labels).backward()
        assert mode.max <= bound, (max_elems, mode.max)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    emb, labels = _hier_batch(11, dtype=torch.float32)
    full = SupHAP(with_hrank=True)(emb, labels)
    half = SupHAP(with_hrank=True)(emb.half(), labels)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=2e-2)
