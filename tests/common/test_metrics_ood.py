"""common.metrics.ood against sklearn and hand-worked cases (conventions: docs/metrics.md#ood-metrics)."""

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
    """ID tight, OOD wide and skewed: the ID-positive and OOD-positive FPR95 are different numbers."""
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


def test_all_scores_equal_is_chance_not_perfect():
    """A constant scorer separates nothing: every FPR95 is 1 (not 0) beside AUROC 0.5."""
    out = ood_metrics(np.full(10, 0.3), np.full(7, 0.3))
    assert out["fpr95"] == 1.0 and out["fpr95_ood_positive"] == 1.0 and out["fpr95_closest"] == 1.0
    assert out["auroc"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr95_ties_at_threshold_match_sklearn_roc_point(seed):
    """Integer scores, heavy ties: with 101 ID scores the 95th percentile is an ID score, so HEAT's FPR95 must be the
    FPR of sklearn's ROC curve (ID positive, score -s) at exactly that threshold: OOD scores equal to it are kept."""
    rng = np.random.default_rng(seed)
    id_s = rng.integers(0, 6, 101).astype(float)
    ood_s = rng.integers(3, 9, 200).astype(float)
    thr = np.percentile(id_s, 95)
    assert thr in id_s and thr in ood_s  # the case where the tie rule matters
    y, s = _labels(id_s, ood_s)
    fpr, _, thresholds = roc_curve(1 - y, -s, drop_intermediate=False)
    assert ood_metrics(id_s, ood_s)["fpr95"] == pytest.approx(fpr[thresholds == -thr][0], abs=1e-12)


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros((5, 1)), np.float64(0.2)])
def test_non_1d_scores_are_rejected(bad):
    with pytest.raises(ValueError, match=r"id_scores must be 1-D .*got shape"):
        ood_metrics(bad, np.zeros(3))
    with pytest.raises(ValueError, match=r"ood_scores must be 1-D"):
        ood_metrics(np.zeros(3), torch.as_tensor(bad))


def test_empty_id_scores_are_rejected():
    with pytest.raises(ValueError, match="id_scores is empty"):
        ood_metrics(torch.zeros(0), np.array([1.0]))
