"""Out-of-distribution detection metrics (scores: higher = more OOD).

Conventions (docs/metrics.md, "OOD metrics"):

* ``fpr95`` (HEAT, GalLoP; ID is the positive class): the threshold keeps 95 % of the ID set,
  ``thr = percentile(id_scores, 95)`` with numpy's default linear interpolation, and the FPR is the fraction of
  OOD samples that are kept, ``mean(ood_scores <= thr)``. This is the textbook FPR@95%TPR with ID positive. HEAT's
  ``ood_metrics.py`` writes ``ood_scores < thr``; the two differ only for OOD scores exactly equal to the threshold,
  which we count as kept (pessimistic, as sklearn's ``roc_curve`` does at that threshold). Otherwise a scorer that
  gives every sample the same score would get FPR95 = 0 (a perfect score) beside AUROC 0.5; here it gets 1.
* ``fpr95_ood_positive`` (OpenOOD v1.5, ``auc_and_fpr_recall``): OOD is the positive class; on sklearn's ROC curve of
  (OOD indicator, score), with its default ``drop_intermediate=True`` point thinning, take the first point whose
  TPR (on OOD) is ``>= 0.95`` and report its FPR (on ID). The two FPRs agree for symmetric score distributions and
  differ otherwise.
* ``fpr95_closest`` (the Hendrycks/MCM ``fpr_and_fdr_at_recall`` routine GalLoP calls; ID positive): the FPR at the
  operating point whose ID recall is closest to 0.95.
* ``auroc``: area under the ROC curve with OOD positive (ties count one half); identical for every convention.
* ``aupr_out`` = average precision with OOD positive; ``aupr_in`` = average precision with ID positive and negated
  scores (HEAT; sklearn's ``average_precision_score``, step-wise, not trapezoidal).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "ood_metrics",
    "fpr_at_95_tpr_id",
    "fpr_at_95_tpr_ood",
    "fpr_at_recall_closest",
    "auroc",
    "average_precision",
]


def _as_scores(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one score per sample, [N]); got shape {arr.shape}. Reduce per-class scores to one "
            f"OOD score per sample first (e.g. the max softmax or an energy)."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one score")
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} contains {int(np.isnan(arr).sum())} NaN value(s); fix the scorer (or drop them) first"
        )
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains inf; clip the scores (e.g. energies that overflowed) before evaluation")
    return arr


def _curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tps, fps, thresholds) at each distinct score, from the highest score down (as sklearn)."""
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], y_true[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of every group of equal scores
    tps = np.cumsum(y, dtype=np.float64)[ends]
    fps = (ends + 1) - tps
    return tps, fps, s[ends]


def auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(equal): trapezoidal area under the ROC curve."""
    y = np.r_[np.ones(pos_scores.size), np.zeros(neg_scores.size)]
    tps, fps, _ = _curve(y, np.r_[pos_scores, neg_scores])
    tpr = np.r_[0.0, tps] / pos_scores.size
    fpr = np.r_[0.0, fps] / neg_scores.size
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over the distinct thresholds (sklearn's ``average_precision_score``)."""
    y = np.r_[np.ones(pos_scores.size), np.zeros(neg_scores.size)]
    tps, fps, _ = _curve(y, np.r_[pos_scores, neg_scores])
    precision = tps / (tps + fps)
    recall = tps / pos_scores.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_95_tpr_id(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """HEAT's FPR95 (ID positive): ``mean(ood <= percentile(id, 100 tpr))`` with linear interpolation.

    An OOD score equal to the threshold counts as a false positive (see the module docstring), so tied scores never
    look better than they are: all scores equal gives 1.0.
    """
    thr = np.percentile(id_scores, 100.0 * tpr)
    return float(np.mean(ood_scores <= thr))


def fpr_at_95_tpr_ood(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """OpenOOD v1.5's FPR@95 (OOD positive): FPR on ID at the first ROC point with TPR on OOD ``>= tpr``."""
    y = np.r_[np.ones(ood_scores.size), np.zeros(id_scores.size)]
    tps, fps, _ = _curve(y, np.r_[ood_scores, id_scores])
    if tps.size > 2:  # sklearn's drop_intermediate: drop points collinear with both neighbours
        keep = np.nonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        tps, fps = tps[keep], fps[keep]
    tpr_curve = np.r_[0.0, tps] / ood_scores.size
    fpr_curve = np.r_[0.0, fps] / id_scores.size
    return float(fpr_curve[np.argmax(tpr_curve >= tpr)])


def fpr_at_recall_closest(id_scores: np.ndarray, ood_scores: np.ndarray, recall: float = 0.95) -> float:
    """Hendrycks' ``fpr_and_fdr_at_recall`` (ID positive, score = -OOD score): FPR where ID recall is closest to 0.95.

    Operating points are taken from the highest ID-recall down to the first point reaching full recall (the routine
    scans them in that order and keeps the first closest one), plus the routine's appended (recall 1, FPR 0) point.
    """
    y = np.r_[np.ones(id_scores.size), np.zeros(ood_scores.size)]
    tps, fps, _ = _curve(y, -np.r_[id_scores, ood_scores])
    rec = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))
    rec_r = np.r_[rec[last::-1], 1.0]
    fps_r = np.r_[fps[last::-1], 0.0]
    cutoff = int(np.argmin(np.abs(rec_r - recall)))
    return float(fps_r[cutoff] / ood_scores.size)


def ood_metrics(id_scores, ood_scores) -> dict[str, float]:
    """OOD metrics from 1-D ID and OOD scores (tensors or arrays; higher = more OOD), all in [0, 1].

    Raises ``ValueError`` for input that is not 1-D, empty, or holds NaN or inf.

    Keys: ``fpr95`` (ID positive, HEAT/GalLoP), ``fpr95_ood_positive`` (OpenOOD v1.5), ``fpr95_closest``
    (Hendrycks/MCM routine), ``auroc``, ``aupr_in``, ``aupr_out``. See the module docstring for the conventions.
    """
    id_s = _as_scores(id_scores, "id_scores")
    ood_s = _as_scores(ood_scores, "ood_scores")
    return {
        "fpr95": fpr_at_95_tpr_id(id_s, ood_s),
        "fpr95_ood_positive": fpr_at_95_tpr_ood(id_s, ood_s),
        "fpr95_closest": fpr_at_recall_closest(id_s, ood_s),
        "auroc": auroc(ood_s, id_s),
        "aupr_in": average_precision(-id_s, -ood_s),
        "aupr_out": average_precision(ood_s, id_s),
    }
