"""common.metrics.retrieval against PML, sklearn, a slow brute force written from the formulas, and hand-worked cases."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from common.metrics.retrieval import evaluate_retrieval, retrieval_metrics

ALL = ("recall", "precision_at_1", "r_precision", "map_at_r", "map", "ndcg", "hap", "asi")
BINARY = ("recall", "precision_at_1", "r_precision", "map_at_r", "map")


# ----------------------------------------------------------------------------------------------------------------
# brute force: explicit pessimistic ranking, exact rational arithmetic, one query at a time
# ----------------------------------------------------------------------------------------------------------------
def _levels(a, b) -> int:
    """Shared levels from the coarsest column down (a tree); multi-label: number of shared labels."""
    if isinstance(a, tuple) and isinstance(a[0], bool):
        return sum(x and y for x, y in zip(a, b))
    t = 0
    for col in range(len(a) - 1, -1, -1):
        if a[col] != b[col]:
            break
        t += 1
    return t


def brute_force(scores, labels, queries, gallery, *, exclude_self, recall_at, n_levels, binary_pos, count_self=True):
    """scores: dict (q, j) -> exact score (Fraction/int); labels: list of tuples. Returns per-query metric dicts."""
    results = []
    for q in queries:
        items = [j for j in gallery if not (exclude_self and j == q)]
        lev = {j: _levels(labels[q], labels[j]) for j in items}
        pos = {j: binary_pos(labels[q], labels[j]) for j in items}
        res: dict[str, float] = {}
        # binary: sort by score desc, negatives first within ties
        order = sorted(items, key=lambda j: (-scores[q, j], pos[j]))
        flags = [pos[j] for j in order]
        r = sum(flags)
        if r > 0:
            positions = [i + 1 for i, f in enumerate(flags) if f]
            for k in recall_at:
                res[f"recall@{k}"] = float(positions[0] <= k)
            res["precision@1"] = float(flags[0])
            res["r_precision"] = sum(flags[:r]) / r
            res["map@r"] = float(sum(Fraction(i + 1, p) for i, p in enumerate(positions) if p <= r) / r)
            res["map"] = float(sum(Fraction(i + 1, p) for i, p in enumerate(positions)) / r)
        # graded: sort by score desc, lower level first within ties
        g_order = sorted(items, key=lambda j: (-scores[q, j], lev[j]))
        ts = [lev[j] for j in g_order]
        n_rel = sum(1 for t in ts if t > 0)
        if n_rel > 0:
            count = {lv: sum(1 for t in ts if t == lv) for lv in range(n_levels + 1)}
            if exclude_self and count_self and q in gallery and not isinstance(labels[q][0], bool):
                count[n_levels] += 1
            w = [Fraction(lv, max(n_levels - 1, 1)) for lv in range(n_levels + 1)]
            rel = [w[t] / count[t] if t > 0 else Fraction(0) for t in ts]
            hap = Fraction(0)
            for k, t in enumerate(ts):
                if t > 0:
                    hrank = rel[k] + sum(min(rel[k], rel[j]) for j in range(k))
                    hap += hrank / (k + 1)
            res["hap"] = float(hap / sum(rel))
            dcg = sum((2**t - 1) / math.log2(k + 2) for k, t in enumerate(ts))
            ideal = sorted(ts, reverse=True)
            idcg = sum((2**t - 1) / math.log2(k + 2) for k, t in enumerate(ideal))
            res["ndcg"] = dcg / idcg
            asi = Fraction(0)
            for nn in range(1, n_rel + 1):
                pred, best = ts[:nn], ideal[:nn]
                inter = sum(min(pred.count(v), best.count(v)) for v in set(best))
                asi += Fraction(inter, nn)
            res["asi"] = float(asi / n_rel)
        results.append(res)
    return results


def _mean(per_query: list[dict], key: str) -> float:
    vals = [r[key] for r in per_query if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def _tied_embeddings(n: int, n_distinct: int, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Vectors with four entries +-1 (norm 2) drawn from a small pool: exact scores (multiples of 1/4), many ties."""
    pool = torch.zeros(n_distinct, dim)
    for i in range(n_distinct):
        idx = torch.randperm(dim, generator=gen)[:4]
        pool[i, idx] = torch.randint(0, 2, (4,), generator=gen).float() * 2 - 1
    pick = torch.randint(0, n_distinct, (n,), generator=gen)
    x = pool[pick]
    ints = (x @ x.T).round().long().numpy()  # exact integer dot products, score = int / 4
    return x, ints


def _exact_case(ints: np.ndarray, labels: torch.Tensor) -> tuple[dict, list[tuple]]:
    """The inputs of :func:`brute_force`: exact scores ``{(i, j): ints[i, j] / 4}`` and each label row as a tuple of
    Python ints (bools for multi-label)."""
    n = len(labels)
    scores = {(i, j): Fraction(int(ints[i, j]), 4) for i in range(n) for j in range(n)}
    return scores, [tuple(row) for row in labels.reshape(n, -1).tolist()]


def _same_finest(a: tuple, b: tuple) -> bool:
    return a[0] == b[0]


def _metric_keys(recall_at) -> list[str]:
    """Every key of :data:`ALL` for ``recall_at``."""
    return [f"recall@{k}" for k in recall_at] + ["precision@1", "r_precision", "map@r", "map", "ndcg", "hap", "asi"]


def _check(ours: dict, brute: list[dict], keys) -> None:
    for key in keys:
        assert ours[key] == pytest.approx(_mean(brute, key), abs=1e-9, nan_ok=True), key


def _vs_brute_force(
    x: torch.Tensor,
    ints: np.ndarray,
    labels: torch.Tensor,
    *,
    recall_at: tuple[int, ...],
    n_levels: int,
    chunk_size: int,
    binary_pos=_same_finest,
    split: tuple[list[int], list[int]] | None = None,
    exclude_self: bool = True,
) -> tuple[dict, list[dict]]:
    """:func:`evaluate_retrieval` of every metric on ``x`` (scores ``ints / 4``) checked against :func:`brute_force`
    over all items, or over the ``split = (queries, gallery)``; returns (ours, the brute force's per-query dicts)."""
    scores, lab = _exact_case(ints, labels)
    queries, gallery = split if split is not None else (range(len(labels)), range(len(labels)))
    brute = brute_force(
        scores, lab, queries, gallery, exclude_self=exclude_self, recall_at=recall_at, n_levels=n_levels,
        binary_pos=binary_pos,
    )  # fmt: skip
    idx = {} if split is None else {"query_idx": torch.tensor(split[0]), "gallery_idx": torch.tensor(split[1])}
    ours = evaluate_retrieval(
        x, labels, metrics=ALL, recall_at=recall_at, exclude_self=exclude_self, chunk_size=chunk_size, **idx
    )
    _check(ours, brute, _metric_keys(recall_at))
    return ours, brute


# ----------------------------------------------------------------------------------------------------------------
# brute force with many ties
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hierarchical_many_ties_vs_brute_force(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    n = 60
    x, ints = _tied_embeddings(n, 7, 8, gen)
    fine = torch.randint(0, 12, (n,), generator=gen)
    labels = torch.stack([fine, fine // 4], 1)  # a tree: 12 classes in 3 super-classes
    ours, brute = _vs_brute_force(x.to(dtype), ints, labels, recall_at=(1, 3, 10), n_levels=2, chunk_size=7)
    assert ours["num_skipped_queries"] == sum(1 for r in brute if "map" not in r)
    assert ours["num_skipped_queries_graded"] == sum(1 for r in brute if "hap" not in r)


def test_flat_labels_many_ties_and_large_classes_vs_brute_force():
    """Classes of 20+ items exercise the sorted-counting branch (more than 16 positives per query)."""
    gen = torch.Generator().manual_seed(5)
    n = 80
    x, ints = _tied_embeddings(n, 5, 8, gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    _vs_brute_force(x.double(), ints, labels, recall_at=(1, 5), n_levels=1, chunk_size=16)


def test_query_gallery_split_vs_brute_force():
    gen = torch.Generator().manual_seed(3)
    n = 70
    x, ints = _tied_embeddings(n, 9, 8, gen)
    fine = torch.randint(0, 10, (n,), generator=gen)
    labels = torch.stack([fine, fine // 3], 1)
    q, g = list(range(0, 25)), list(range(20, 70))  # overlapping: items 20..24 are in both
    for exclude_self in (True, False):
        _vs_brute_force(
            x.double(), ints, labels, recall_at=(1, 4), n_levels=2, chunk_size=6, split=(q, g),
            exclude_self=exclude_self,
        )  # fmt: skip


def test_multilabel_vs_brute_force():
    gen = torch.Generator().manual_seed(4)
    n, c = 50, 5
    x, ints = _tied_embeddings(n, 8, 8, gen)
    labels = torch.rand(n, c, generator=gen) < 0.3
    _vs_brute_force(
        x.double(), ints, labels, recall_at=(1, 5), n_levels=c, chunk_size=9,
        binary_pos=lambda a, b: any(u and v for u, v in zip(a, b)),
    )  # fmt: skip


def test_relevance_without_self_count_vs_brute_force():
    gen = torch.Generator().manual_seed(8)
    n = 40
    x, ints = _tied_embeddings(n, 6, 8, gen)
    fine = torch.randint(0, 8, (n,), generator=gen)
    labels = torch.stack([fine, fine // 2, fine // 4], 1)  # three levels
    scores, lab = _exact_case(ints, labels)
    for count_self in (True, False):
        brute = brute_force(
            scores, lab, range(n), range(n), exclude_self=True, recall_at=(1,), n_levels=3,
            binary_pos=_same_finest, count_self=count_self,
        )  # fmt: skip
        ours = retrieval_metrics(x.double(), labels, metrics=("hap", "ndcg", "asi"), count_self_in_relevance=count_self)
        _check(ours, brute, ["hap", "ndcg", "asi"])


# ----------------------------------------------------------------------------------------------------------------
# tie-free comparisons with PML and sklearn
# ----------------------------------------------------------------------------------------------------------------
def _clustered(n: int, n_classes: int, dim: int, seed: int, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    centers = torch.randn(n_classes, dim, generator=gen)
    x = centers[labels] + noise * torch.randn(n, dim, generator=gen)
    return x.double(), labels


def test_binary_metrics_match_pml_accuracy_calculator():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, labels = _clustered(400, 40, 16, seed=0, noise=1.5)
    xn = torch.nn.functional.normalize(x, dim=1)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    pml = calc.get_accuracy(xn.float(), labels)
    ours = evaluate_retrieval(x, labels, metrics=("precision_at_1", "r_precision", "map_at_r"))
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert 0.05 < ours["map@r"] < 0.95  # a non-trivial case


def test_query_gallery_split_matches_pml():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, labels = _clustered(500, 30, 16, seed=1, noise=1.5)
    xn = torch.nn.functional.normalize(x, dim=1)
    q, g = torch.arange(0, 150), torch.arange(150, 500)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    pml = calc.get_accuracy(xn[q].float(), labels[q], xn[g].float(), labels[g], ref_includes_query=False)
    ours = evaluate_retrieval(
        x, labels, query_idx=q, gallery_idx=g, exclude_self=False, metrics=("precision_at_1", "r_precision", "map_at_r")
    )
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def test_per_query_ap_and_ndcg_match_sklearn():
    x, labels = _clustered(150, 15, 8, seed=2, noise=1.2)
    coarse = labels // 5
    h = torch.stack([labels, coarse], 1)
    out = retrieval_metrics(x, h, metrics=("map", "ndcg"), per_query=True)
    xn = torch.nn.functional.normalize(x, dim=1)
    s = (xn @ xn.T).numpy()
    ap, nd = [], []
    for q in range(len(x)):
        keep = np.arange(len(x)) != q
        y = (labels[keep] == labels[q]).numpy()
        t = (h[keep] == h[q]).flip(1).long().cumprod(1).sum(1).numpy()  # shared levels from the coarsest down
        if y.any():
            ap.append(average_precision_score(y, s[q, keep]))
        nd.append(ndcg_score([2.0**t - 1], [s[q, keep]]))
    per_q = out["per_query"]["map"]
    np.testing.assert_allclose(per_q[~per_q.isnan()].numpy(), ap, atol=1e-9)
    np.testing.assert_allclose(out["per_query"]["ndcg"].numpy(), nd, atol=1e-9)
    assert out["map"] == pytest.approx(np.mean(ap), abs=1e-9)


def test_hap_equals_formula_with_heaviside_on_tie_free_data():
    """Without ties, H-AP is HAPPIER's Eq. 3-4 with H(s_j - s_k) over all other items."""
    x, fine = _clustered(80, 12, 8, seed=6, noise=1.3)
    h = torch.stack([fine, fine // 4], 1)
    out = retrieval_metrics(x, h, metrics=("hap",), per_query=True)
    xn = torch.nn.functional.normalize(x, dim=1)
    s = xn @ xn.T
    for q in range(0, 80, 7):
        keep = torch.arange(80) != q
        t = (h[keep] == h[q]).flip(1).long().cumprod(1).sum(1)
        counts = torch.bincount(t, minlength=3).double()
        counts[2] += 1  # HAPPIER counts the query itself at the finest level
        w = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        rel = torch.where(t > 0, w[t] / counts[t], 0.0)
        sq = s[q, keep]
        heav = (sq[None, :] >= sq[:, None]).double()  # [k, j] = H(s_j - s_k)
        heav.fill_diagonal_(0.0)
        hrank = rel + (torch.minimum(rel[:, None], rel[None, :]) * heav).sum(1)
        rank = 1 + heav.sum(1)
        expected = (hrank / rank)[rel > 0].sum() / rel.sum()
        assert out["per_query"]["hap"][q].item() == pytest.approx(expected.item(), abs=1e-12)


def test_float32_and_float64_agree_and_chunking_is_invisible():
    x, labels = _clustered(200, 20, 12, seed=3)
    h = torch.stack([labels, labels // 4], 1)
    ref = evaluate_retrieval(x, h, metrics=ALL, recall_at=(1, 2, 50))
    for kw in ({"chunk_size": 1}, {"chunk_size": 13}, {"chunk_size": 500}, {"device": "cpu"}):
        got = evaluate_retrieval(x, h, metrics=ALL, recall_at=(1, 2, 50), **kw)
        assert got == pytest.approx(ref, abs=1e-12)
    got32 = evaluate_retrieval(x.float(), h, metrics=ALL, recall_at=(1, 2, 50))
    assert got32 == pytest.approx(ref, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# hand-worked and degenerate cases
# ----------------------------------------------------------------------------------------------------------------
def _unit(angle_cos: float) -> list[float]:
    return [angle_cos, math.sqrt(1 - angle_cos**2)]


def test_hand_worked_pessimistic_tie():
    # query (1, 0); gallery: negative at cos 0.9, positive at cos 0.9 (a tie), positive at 0.5, negative at 0.1
    emb = torch.tensor([[1.0, 0.0], _unit(0.9), _unit(0.9), _unit(0.5), _unit(0.1)], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 2])
    out = evaluate_retrieval(
        emb, labels, query_idx=torch.tensor([0]), gallery_idx=torch.arange(1, 5), exclude_self=False,
        metrics=BINARY, recall_at=(1, 2),
    )  # fmt: skip
    # ranking: neg(0.9), pos(0.9), pos(0.5), neg(0.1) -> positives at 2 and 3
    assert out["recall@1"] == 0.0 and out["recall@2"] == 1.0
    assert out["precision@1"] == 0.0
    assert out["r_precision"] == pytest.approx(1 / 2)
    assert out["map@r"] == pytest.approx((1 / 2) / 2)
    assert out["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_hand_worked_graded_metrics():
    # query q = (0, 0); a: same class; b1, b2: same super-class only; c: unrelated. Scores b1 .9, a .8, c .7, b2 .6
    emb = torch.tensor([[1.0, 0.0], _unit(0.8), _unit(0.9), _unit(0.6), _unit(0.7)], dtype=torch.float64)
    labels = torch.tensor([[0, 0], [0, 0], [1, 0], [2, 0], [3, 1]])
    kw = {"query_idx": torch.tensor([0]), "metrics": ("hap", "ndcg", "asi")}
    out = retrieval_metrics(emb, labels, **kw)  # query counted at the finest level: rel(a) = 2/2, rel(b) = 1/2
    assert out["hap"] == pytest.approx((0.5 / 1 + 1.5 / 2 + 1.5 / 4) / 2.0)
    out_nc = retrieval_metrics(emb, labels, count_self_in_relevance=False, **kw)  # rel(a) = 2/1
    assert out_nc["hap"] == pytest.approx((0.5 / 1 + 2.5 / 2 + 1.5 / 4) / 3.0)
    dcg = 1 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["ndcg"] == pytest.approx(dcg / idcg)
    assert out["asi"] == pytest.approx((0 + 2 / 2 + 2 / 3) / 3)


def test_one_item_per_class_skips_every_query():
    x = torch.randn(10, 4, dtype=torch.float64)
    out = evaluate_retrieval(x, torch.arange(10), metrics=BINARY + ("hap",))
    assert out["num_skipped_queries"] == 10 and out["num_skipped_queries_graded"] == 10
    assert math.isnan(out["map"]) and math.isnan(out["hap"])


def test_all_equal_embeddings_rank_every_positive_last():
    x = torch.ones(12, 3, dtype=torch.float64)
    labels = torch.tensor([0] * 3 + [1] * 4 + [2] * 5)
    out = retrieval_metrics(x, labels, metrics=BINARY, recall_at=(1, 11), per_query=True)
    assert out["precision@1"] == 0.0 and out["recall@11"] == 1.0
    # class of size s: R = s - 1 positives after 12 - s negatives
    expected = []
    for s in labels.bincount().tolist():
        r, n_neg = s - 1, 12 - s
        expected += [sum((i + 1) / (i + 1 + n_neg) for i in range(r)) / r] * s
    np.testing.assert_allclose(out["per_query"]["map"].numpy(), expected, atol=1e-12)
    assert out["map@r"] == 0.0 and out["r_precision"] == 0.0


def test_one_class_is_perfect():
    x = torch.randn(9, 4, dtype=torch.float64)
    out = evaluate_retrieval(x, torch.zeros(9, dtype=torch.long), metrics=ALL, recall_at=(1,))
    for key in ("recall@1", "precision@1", "r_precision", "map@r", "map", "ndcg", "hap", "asi"):
        assert out[key] == pytest.approx(1.0), key


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(torch.full((5, 3), float("nan")), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per item"):
        evaluate_retrieval(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_retrieval(x, torch.zeros(5, dtype=torch.long), metrics=("mrr",))
    with pytest.raises(ValueError, match="integer"):
        evaluate_retrieval(x, torch.zeros(5))
    with pytest.raises(ValueError, match="query_idx"):
        evaluate_retrieval(x, torch.zeros(5, dtype=torch.long), query_idx=torch.tensor([7]))
    with pytest.raises(ValueError, match="embeddings are empty"):  # was ZeroDivisionError
        evaluate_retrieval(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------------
# the bf16 candidate pass is exact (float64 ranking), near-ties and exact ties included
# ----------------------------------------------------------------------------------------------------------------
def _hard_float32_set(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered float32 data with exact duplicates across classes and near-duplicates (cosines 1e-5 apart, far below bf16
    resolution), so the candidate pass must rescore to rank them."""
    x, labels = _clustered(600, 60, 32, seed=seed, noise=1.0)
    x = torch.nn.functional.normalize(x.float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, 600, (80,), generator=gen)
    dst = torch.randint(0, 600, (80,), generator=gen)
    x[dst[:40]] = x[src[:40]]  # exact duplicates (usually of another class): exact ties
    x[dst[40:]] = x[src[40:]] + 1e-3 * torch.randn(40, 32, generator=gen)  # near ties (cosine gap ~1e-5)
    return torch.nn.functional.normalize(x, dim=1), labels


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metrics", [BINARY, ("recall", "precision_at_1", "r_precision", "map_at_r")])
def test_bf16_candidate_pass_equals_float64_ranking(seed, metrics):
    x, labels = _hard_float32_set(seed)
    kw = {"metrics": metrics, "recall_at": (1, 5, 50), "per_query": True, "chunk_size": 64}
    fast = retrieval_metrics(x, labels, candidate_pass="bf16", **kw)
    exact = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)
    for key, ref in exact["per_query"].items():
        assert torch.equal(fast["per_query"][key].isnan(), ref.isnan()), key
        torch.testing.assert_close(fast["per_query"][key].nan_to_num(), ref.nan_to_num(), atol=1e-12, rtol=0)
    # and a hierarchical label matrix uses column 0
    h = torch.stack([labels, labels // 6], 1)
    fast_h = retrieval_metrics(x, h, candidate_pass="bf16", **kw)
    assert fast_h["map@r"] == pytest.approx(exact["map@r"], abs=1e-12)


def test_bf16_pass_with_query_gallery_split_and_unstructured_data():
    x, labels = _hard_float32_set(3)
    q, g = torch.arange(0, 200), torch.arange(100, 600)
    kw = {"query_idx": q, "gallery_idx": g, "metrics": BINARY, "recall_at": (1, 3), "chunk_size": 50}
    for exclude_self in (True, False):
        fast = retrieval_metrics(x, labels, candidate_pass="bf16", exclude_self=exclude_self, **kw)
        exact = retrieval_metrics(x.double(), labels, candidate_pass="off", exclude_self=exclude_self, **kw)
        assert fast == pytest.approx(exact, abs=1e-12)
    # random directions: positives deep in the ranking, most of the gallery are candidates (tie-free: same values)
    r = torch.nn.functional.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    lab = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(1))
    fast = retrieval_metrics(r, lab, candidate_pass="bf16", metrics=BINARY, recall_at=(1, 10))
    exact = retrieval_metrics(r.double(), lab, candidate_pass="off", metrics=BINARY, recall_at=(1, 10))
    assert fast == pytest.approx(exact, abs=1e-12)


def test_bf16_error_bound_holds():
    from common.metrics.retrieval import bf16_score_error_bound

    gen = torch.Generator().manual_seed(0)
    for dim in (8, 64, 512):
        a = torch.nn.functional.normalize(torch.randn(200, dim, generator=gen), dim=1)
        a[1] = a[0]  # |s| = 1 included
        approx = (a.bfloat16() @ a.bfloat16().T).double()
        exact = a.double() @ a.double().T
        err = (approx - exact).abs().max().item()
        assert err <= bf16_score_error_bound(dim) < 0.02


@pytest.mark.parametrize("spread", [0.01, 10.0])
def test_count_at_or_above_both_branches_vs_brute_force(spread):
    from common.metrics.retrieval_dense import _count_at_or_above

    gen = torch.Generator().manual_seed(0)
    scores = torch.round(torch.randn(20, 300, generator=gen) * 4) / 4  # many ties
    exclude = torch.rand(20, 300, generator=gen) < 0.1
    thr = torch.sort(torch.randn(20, 5, generator=gen) * spread, dim=1, descending=True).values
    thr = torch.round(thr * 4) / 4
    thr[3, 2:] = -math.inf  # padding
    got = _count_at_or_above(scores, exclude, thr)
    for r in range(20):
        for i in range(5):
            if math.isfinite(thr[r, i]):
                assert got[r, i] == int(((scores[r] >= thr[r, i]) & ~exclude[r]).sum())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_count_tree_and_generic_graded_engines_agree_with_ties_and_split(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    x, _ = _tied_embeddings(90, 8, 8, gen)  # scores are multiples of 1/4: exact in both dtypes, many ties
    fine = torch.randint(0, 15, (90,), generator=gen)
    labels = torch.stack([fine % 5, fine // 5, fine // 10], 1)  # fine ids reused under different parents
    for kw in ({}, {"query_idx": torch.arange(30), "gallery_idx": torch.arange(20, 90)}, {"exclude_self": False}):
        for relevance, alpha in (("pop", 1.0), ("pop", 0.5), ("map", [1.0, 0.5, 0.25])):
            common = {"metrics": ALL, "recall_at": (1, 7), "relevance": relevance, "alpha": alpha, "chunk_size": 11}
            gen_ = retrieval_metrics(x.to(dtype), labels, graded_engine="generic", per_query=True, **common, **kw)
            for engine in ("tree", "count"):
                got = retrieval_metrics(x.to(dtype), labels, graded_engine=engine, per_query=True, **common, **kw)
                for key, ref in gen_["per_query"].items():
                    torch.testing.assert_close(got["per_query"][key], ref, atol=1e-12, rtol=0, equal_nan=True)


# ----------------------------------------------------------------------------------------------------------------
# the CPU count engine: exact counts by cell histogram, against brute force and the other engines
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sparse", "cells", "auto"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cells_per_thr", [1, 8])
def test_count_at_or_above_sorted_vs_brute_force(method, dtype, cells_per_thr):
    from common.metrics.retrieval_count import _count_at_or_above_sorted

    rng = np.random.default_rng(0)
    c, m, k = 12, 400, 40
    scores = (np.round(rng.standard_normal((c, m)) * 8) / 32).astype(dtype)  # many exact ties
    scores[rng.random((c, m)) < 0.05] = -np.inf  # excluded entries
    scores[0, :50] = -0.0  # signed zeros tie with +0 thresholds
    scores[1] = rng.standard_normal(m).astype(dtype)  # a tie-free row
    n_real = rng.integers(0, k + 1, c)
    n_real[2], n_real[3] = 0, k  # a row without thresholds, a full one
    thr = np.full((c, k), np.inf, dtype=dtype)
    for r in range(c):
        pick = rng.choice(m, n_real[r])
        thr[r, : n_real[r]] = np.sort(np.where(np.isfinite(scores[r, pick]), scores[r, pick], 0.0))
    thr[0, : n_real[0]] = 0.0  # one crowded cell: more than 16 tied thresholds take the binary-search branch
    thr[4, : n_real[4]] = np.sort(rng.standard_normal(n_real[4])) * 1e-30  # tiny spread
    got = _count_at_or_above_sorted(scores, thr, n_real, method=method, cells_per_thr=cells_per_thr)
    for r in range(c):
        for i in range(k):
            expected = int((scores[r] >= thr[r, i]).sum()) if i < n_real[r] else 0
            assert got[r, i] == expected, (r, i)


def test_count_engine_matches_tree_engine_on_random_hierarchy():
    """Tie-free float64 data with three levels, a query/gallery split and chunks: count and tree agree per query."""
    gen = torch.Generator().manual_seed(11)
    n = 900
    fine = torch.randint(0, 60, (n,), generator=gen)
    labels = torch.stack([fine, fine // 6, fine // 30], 1)
    centers = torch.randn(60, 16, generator=gen, dtype=torch.float64)
    x = centers[fine] + 1.2 * torch.randn(n, 16, generator=gen, dtype=torch.float64)
    kw = {"metrics": ALL, "recall_at": (1, 10), "per_query": True, "chunk_size": 97}
    for split in ({}, {"query_idx": torch.arange(0, 300), "gallery_idx": torch.arange(200, n)}):
        count = retrieval_metrics(x, labels, graded_engine="count", **kw, **split)
        tree = retrieval_metrics(x, labels, graded_engine="tree", **kw, **split)
        for key, ref in tree["per_query"].items():
            torch.testing.assert_close(count["per_query"][key], ref, atol=1e-12, rtol=0, equal_nan=True)
        assert 0.1 < count["hap"] < 0.9 and 0.1 < count["asi"] < 0.9  # non-trivial


def test_count_engine_rejects_what_it_cannot_do():
    x, labels = torch.randn(20, 4), torch.rand(20, 3) < 0.5
    with pytest.raises(ValueError, match="generic"):
        retrieval_metrics(x, labels, metrics=("hap",), graded_engine="count")
    with pytest.raises(ValueError, match="graded_engine"):
        retrieval_metrics(x, torch.zeros(20, dtype=torch.long), metrics=("hap",), graded_engine="sort")


# ----------------------------------------------------------------------------------------------------------------
# the bf16 candidate pass: per-vector error bound, bf16 helpers, hard cases
# ----------------------------------------------------------------------------------------------------------------
def test_bf16_per_vector_bound_holds_for_the_matmul_used():
    """|b - s| <= u|b| + E with E = e_q max|y^| + |q| max e_y + gamma_d |q^| max|y^| (see CandidateEngine)."""
    gen = torch.Generator().manual_seed(1)
    u = 2.0**-8
    for dim in (8, 64, 512):
        a = torch.nn.functional.normalize(torch.randn(300, dim, generator=gen), dim=1)
        a[1] = a[0]
        a[2] = -a[0]  # |s| = 1 both ways
        ab = a.bfloat16()
        b = torch.mm(ab, ab.T.contiguous()).double()
        s = a.double() @ a.double().T
        e = (ab.double() - a.double()).norm(dim=1)
        nb = ab.double().norm(dim=1)
        gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
        err = e * nb.max() + a.double().norm(dim=1) * e.max() + gamma * nb * nb.max()
        assert ((b - s).abs() <= u * b.abs() + err[:, None]).all()
        assert err.max() < 0.01  # and it is much tighter than the worst case (about 0.012 at d = 512)


def _outlier_set(seed: int, class_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight classes plus a few members replaced by random directions: their class-mates have a positive at a
    cosine near or below 0, so those queries take the float (non-integer) compare of the candidate pass."""
    gen = torch.Generator().manual_seed(seed)
    n = max(900, 40 * class_size)
    labels = torch.arange(n) // class_size
    centers = torch.randn(int(labels.max()) + 1, 32, generator=gen)
    x = centers[labels] + 0.6 * torch.randn(n, 32, generator=gen)
    out = torch.randperm(n, generator=gen)[:6]
    x[out] = torch.randn(6, 32, generator=gen)
    x[torch.randperm(n, generator=gen)[:20]] = x[torch.randperm(n, generator=gen)[:20]]  # exact duplicates
    return torch.nn.functional.normalize(x, dim=1), labels


@pytest.mark.parametrize("class_size", [9, 90])  # 90: many positives inside one negative's open range
@pytest.mark.parametrize("metrics", [BINARY, ("recall", "precision_at_1", "r_precision", "map_at_r")])
def test_bf16_candidate_pass_with_outliers_and_large_classes(class_size, metrics):
    x, labels = _outlier_set(0, class_size)
    kw = {"metrics": metrics, "recall_at": (1, 4, 100), "per_query": True, "chunk_size": 128}
    fast = retrieval_metrics(x, labels, candidate_pass="bf16", **kw)
    exact = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)
    for key, ref in exact["per_query"].items():
        torch.testing.assert_close(fast["per_query"][key], ref, atol=1e-12, rtol=0, equal_nan=True)
