"""common.metrics.ood against sklearn and hand-worked cases (conventions: specs/heat_gallop.md §2.2, §9.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from common.metrics.ood import ood_metrics


def _labels(id_s, ood_s):
    return np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))], np.r_[id_s, ood_s]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_aupr_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    id_s = rng.integers(0, 12, 300).astype(float)  # heavy ties
    ood_s = rng.integers(3, 20, 200).astype(float)
    out = ood_metrics(id_s, ood_s)
    y, s = _labels(id_s, ood_s)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert out["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert out["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fpr95_ood_positive_is_openood_code(seed):
    """OpenOOD v1.5: fpr_list[argmax(tpr_list >= 0.95)] of roc_curve(ood_indicator, -conf), conf = -score."""
    rng = np.random.default_rng(seed)
    id_s = np.round(rng.normal(0, 1, 400), 1)  # ties, so sklearn's point thinning matters
    ood_s = np.round(rng.normal(1.5, 2, 250), 1)
    y, s = _labels(id_s, ood_s)
    fpr, tpr, _ = roc_curve(y, s)
    assert ood_metrics(id_s, ood_s)["fpr95_ood_positive"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_fpr95_id_positive_equals_textbook_roc_value():
    """With 101 ID scores the 95th percentile is the 96th smallest ID score: no interpolation, so HEAT's percentile
    FPR95 is the FPR on OOD at the first ROC point (ID positive, score -s) with TPR >= 0.95."""
    rng = np.random.default_rng(7)
    id_s, ood_s = rng.normal(0, 1, 101), rng.normal(2, 1, 333)
    y, s = _labels(id_s, ood_s)
    fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    assert ood_metrics(id_s, ood_s)["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_fpr95_hand_worked_interpolation():
    # ID 0..19: percentile 95 = 18.05 (linear interpolation); OOD below it: 18.0 and 5.0 -> 2 of 4
    out = ood_metrics(np.arange(20.0), np.array([18.0, 18.1, 30.0, 5.0]))
    assert out["fpr95"] == pytest.approx(0.5)
    # Hendrycks routine (ID positive, -score): recall 19/20 is reached at s <= 18 (OOD 5.0, 18.0 kept) and still holds
    # at s <= 18.1 (OOD 18.1 kept too); scanning from full recall down, the routine keeps the first: 3/4
    assert out["fpr95_closest"] == pytest.approx(0.75)


def test_conventions_differ_on_a_skewed_case():
    """ID tight, OOD wide and skewed: the ID-positive and OOD-positive FPR95 are different numbers (spec §9.1)."""
    rng = np.random.default_rng(0)
    id_s = rng.normal(0.0, 0.2, 2000)
    ood_s = np.r_[rng.normal(0.0, 0.2, 1000), rng.exponential(3.0, 1000) + 0.5]
    out = ood_metrics(id_s, ood_s)
    y, s = _labels(id_s, ood_s)
    fpr_id, tpr_id, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    fpr_ood, tpr_ood, _ = roc_curve(y, s)
    assert out["fpr95"] == pytest.approx(fpr_id[np.argmax(tpr_id >= 0.95)], abs=2e-3)  # up to interpolation
    assert out["fpr95_ood_positive"] == pytest.approx(fpr_ood[np.argmax(tpr_ood >= 0.95)], abs=1e-12)
    assert out["fpr95"] < 0.6 and out["fpr95_ood_positive"] > 0.85  # 0.47 vs 0.90
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_symmetric_case_conventions_agree_roughly_and_perfect_separation():
    rng = np.random.default_rng(1)
    id_s, ood_s = rng.normal(0, 1, 5000), rng.normal(3, 1, 5000)
    out = ood_metrics(torch.tensor(id_s), torch.tensor(ood_s))
    assert out["fpr95"] == pytest.approx(out["fpr95_ood_positive"], abs=0.02)
    sep = ood_metrics(np.zeros(10), np.ones(10))
    assert sep == {
        "fpr95": 0.0, "fpr95_ood_positive": 0.0, "fpr95_closest": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
    }  # fmt: skip


def test_nan_and_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(np.array([0.1, np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="ood_scores is empty"):
        ood_metrics(np.array([0.1]), np.array([]))
    with pytest.raises(ValueError, match="inf"):
        ood_metrics(np.array([0.1]), np.array([np.inf]))
