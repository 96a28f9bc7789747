"""Multi-label labels in the binary baseline of the COCO table (ROADMAP: SupAP + calibration) and in the evaluation.

Binary relevance on multi-label data is the deep-hashing convention: a positive shares at least one label with the
query. The losses are checked against loop-based formulas and sklearn; the evaluation mixin must not split a
boolean multi-hot matrix into "levels" (it did: ``per_level_metrics`` crashed on COCO's ``[N, 80]`` labels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from common.metrics.retrieval import evaluate_retrieval
from common.models.embedding_eval import EmbeddingEvalMixin
from roadmap.losses import CalibrationLoss, HeavisideAP, SupAP
from tests.helpers.supap_brute import h_minus


def _multihot(n: int, c: int, seed: int) -> torch.Tensor:
    """``[n, c]`` bool with at least one label per row."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, c, generator=g) < 0.3
    labels[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = True
    return labels


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a & b).any())


def _unit(e: torch.Tensor) -> torch.Tensor:
    e = e.double()
    return e / e.norm(dim=1, keepdim=True)


def _brute_supap(emb: torch.Tensor, labels: torch.Tensor) -> float:
    """1 - mean_q AP_q with SupAP's steps (H on positives, H^- on negatives), the query its own positive (in-batch)."""
    s = (_unit(emb) @ _unit(emb).T).tolist()
    aps = []
    for q in range(len(labels)):
        pos = [j for j in range(len(labels)) if _shares(labels[q], labels[j])]
        total = 0.0
        for i in pos:
            rank, rank_p = 1.0, 1.0
            for j in range(len(labels)):
                if j == i:
                    continue
                d = s[q][j] - s[q][i]
                if j in pos:
                    step = 1.0 if d >= 0 else 0.0
                    rank, rank_p = rank + step, rank_p + step
                else:
                    rank += h_minus(d)
            total += rank_p / rank
        aps.append(total / len(pos))
    return 1.0 - sum(aps) / len(aps)


def _brute_calibration(emb: torch.Tensor, labels: torch.Tensor, alpha: float = 0.9, beta: float = 0.6) -> float:
    s = _unit(emb) @ _unit(emb).T
    pos, neg = [], []
    for a in range(len(labels)):
        for j in range(len(labels)):
            if a != j:
                if _shares(labels[a], labels[j]):
                    pos.append(max(0.0, alpha - float(s[a, j])))
                else:
                    neg.append(max(0.0, float(s[a, j]) - beta))

    def mean_nz(t: list[float]) -> float:
        nz = [v for v in t if v > 0]
        return sum(nz) / len(nz) if nz else 0.0

    return mean_nz(pos) + mean_nz(neg)


def test_exact_ap_on_multilabel_is_sklearn_ap_of_at_least_one_shared_label() -> None:
    labels = _multihot(12, 5, seed=1)
    emb = torch.randn(12, 6, generator=torch.Generator().manual_seed(2))
    loss = HeavisideAP(include_query=False)(emb, labels)
    s = (_unit(emb) @ _unit(emb).T).numpy()
    rel = (labels.float() @ labels.float().T).numpy() > 0
    aps = []
    for q in range(12):
        keep = np.arange(12) != q
        if rel[q, keep].any():
            aps.append(average_precision_score(rel[q, keep], s[q, keep]))
    assert float(loss) == pytest.approx(1.0 - float(np.mean(aps)), abs=1e-6)


def test_supap_on_multilabel_value_and_gradient() -> None:
    labels = _multihot(10, 4, seed=3)
    emb = torch.randn(10, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    value = SupAP()(emb.float(), labels)
    assert float(value) == pytest.approx(_brute_supap(emb, labels), abs=1e-5)
    # one-hot labels: "at least one shared label" is "same class", so SupAP equals its integer-label self
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 3]), 4).bool()
    a = emb.clone().float().requires_grad_(True)
    b = emb.clone().float().requires_grad_(True)
    la, lb = SupAP()(a, onehot), SupAP()(b, onehot.long().argmax(1))
    la.backward(), lb.backward()
    assert float(la.detach()) == pytest.approx(float(lb.detach())) and torch.allclose(a.grad, b.grad)
    assert a.grad.abs().sum() > 0


def test_calibration_on_multilabel_matches_loops() -> None:
    labels = _multihot(9, 4, seed=5)
    emb = torch.randn(9, 5, generator=torch.Generator().manual_seed(6))
    assert float(CalibrationLoss()(emb, labels)) == pytest.approx(_brute_calibration(emb, labels), abs=1e-6)


class _Evaluator(EmbeddingEvalMixin):
    """The mixin outside Lightning: identity embedding, logging into a dict."""

    eval_metrics = ("recall", "map", "hap", "asi", "ndcg")
    recall_at = (1,)
    per_level_metrics = True

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def log_dict(self, values: dict, sync_dist: bool = False) -> None:
        self.logged.update(values)


def _evaluate(labels: torch.Tensor, emb: torch.Tensor, query_gallery: int | None = None) -> dict[str, float]:
    ev = _Evaluator()
    parts = (
        [(0, slice(None))] if query_gallery is None else [(0, slice(0, query_gallery)), (1, slice(query_gallery, None))]
    )
    for loader, sl in parts:
        idx = torch.arange(len(emb))[sl]
        ev._eval_step({"image": emb[sl], "label": labels[sl], "index": idx - idx[0]}, dataloader_idx=loader)
    return ev._eval_epoch_end("test")


def test_eval_mixin_takes_boolean_multilabel_labels_with_per_level_metrics() -> None:
    labels = _multihot(20, 6, seed=7)
    emb = torch.randn(20, 4, generator=torch.Generator().manual_seed(8))
    for nq in (None, 5):  # one self-excluded set; query / gallery
        got = _evaluate(labels, emb, nq)
        kw = (
            {"exclude_self": True}
            if nq is None
            else {"query_idx": torch.arange(nq), "gallery_idx": torch.arange(nq, 20), "exclude_self": False}
        )
        want = evaluate_retrieval(emb, labels, metrics=_Evaluator.eval_metrics, recall_at=(1,), **kw)
        for key in ("hap", "asi", "ndcg", "recall@1", "map"):
            assert got[f"test/{key}"] == pytest.approx(want[key]) and 0 <= got[f"test/{key}"] <= 1
        assert not any(k.startswith("test/level") for k in got)  # a label column is not a level
    # hierarchical int labels still get their per-level metrics
    tree = torch.stack([torch.arange(20) // 2, torch.arange(20) // 6], dim=1)
    got = _evaluate(tree, emb)
    assert got["test/level1/map"] == pytest.approx(evaluate_retrieval(emb, tree[:, 1], metrics=("map",))["map"])
