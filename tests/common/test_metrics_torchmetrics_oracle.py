"""torchmetrics as an independent oracle for the retrieval and OOD metrics (its own implementations, per query).

Retrieval, tie-free data, every item a query against all the others (self excluded), every class with >= 2 items:
- ``recall@k`` (at least one positive in the top k) = ``retrieval_hit_rate(top_k=k)``;
- ``precision@1`` = ``retrieval_precision(top_k=1)``; ``r_precision`` = ``retrieval_r_precision``;
- ``map`` (AP over the whole ranking) = ``retrieval_average_precision``.
OOD (score: higher = more OOD, OOD positive): ``auroc`` = ``binary_auroc``; ``aupr_out`` = ``binary_average_precision``;
``aupr_in`` = the same with ID positive and the score negated.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_average_precision
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_hit_rate,
    retrieval_precision,
    retrieval_r_precision,
)

from common.metrics.ood import ood_metrics
from common.metrics.retrieval import evaluate_retrieval


def _per_query(emb: torch.Tensor, labels: torch.Tensor, fn, **kw) -> float:
    # + 2: torchmetrics' retrieval functions treat an item with a score <= 0 as not retrieved (its
    # retrieval_average_precision drops such positives); a constant shift keeps every ranking
    sims = F.normalize(emb.double(), dim=1) @ F.normalize(emb.double(), dim=1).T + 2.0
    vals = []
    for q in range(len(emb)):
        keep = torch.arange(len(emb)) != q
        vals.append(float(fn(sims[q, keep], labels[keep] == labels[q], **kw)))
    return sum(vals) / len(vals)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(8).repeat_interleave(6)[torch.randperm(48, generator=g)]
    emb = torch.randn(8, 16, generator=g)[labels] * 0.7 + torch.randn(48, 16, generator=g)  # tie-free
    got = evaluate_retrieval(emb, labels, metrics=("recall", "precision_at_1", "r_precision", "map"), recall_at=(1, 4))
    assert got["num_skipped_queries"] == 0
    for k in (1, 4):
        assert got[f"recall@{k}"] == pytest.approx(_per_query(emb, labels, retrieval_hit_rate, top_k=k), abs=1e-6)
    assert got["precision@1"] == pytest.approx(_per_query(emb, labels, retrieval_precision, top_k=1), abs=1e-6)
    assert got["r_precision"] == pytest.approx(_per_query(emb, labels, retrieval_r_precision), abs=1e-6)
    assert got["map"] == pytest.approx(_per_query(emb, labels, retrieval_average_precision), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_ood_auroc_and_aupr_match_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    id_s, ood_s = torch.randn(300, generator=g, dtype=torch.float64), torch.randn(200, generator=g).double() + 1.0
    out = ood_metrics(id_s, ood_s)
    s = torch.cat([id_s, ood_s])
    is_ood = torch.cat([torch.zeros(300), torch.ones(200)]).long()
    assert out["auroc"] == pytest.approx(float(binary_auroc(s, is_ood)), abs=1e-6)
    assert out["aupr_out"] == pytest.approx(float(binary_average_precision(s, is_ood)), abs=1e-6)
    assert out["aupr_in"] == pytest.approx(float(binary_average_precision(-s, 1 - is_ood)), abs=1e-6)
