"""Slow, loop-based reference implementations written straight from the formulas (independent of roadmap/)."""

from __future__ import annotations

import torch

from tests.helpers.supap_brute import h_minus, sig

__all__ = ["brute_ap_loss", "brute_calibration", "h_minus", "heav", "normalize", "sig"]


def heav(x: float) -> float:
    return 1.0 if x >= 0 else 0.0


def normalize(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=1, keepdim=True)


def brute_ap_loss(emb, labels, ref=None, ref_labels=None, include_query=True, neg_step=heav, pos_step=heav):
    """1 - mean_q (1/|P_q|) sum_{i in P_q} rank+(i)/rank(i), by explicit loops; queries without positives skipped."""
    q = normalize(emb.double())
    if ref is None:
        r, rl, in_batch = q, labels, True
    else:
        r, rl, in_batch = normalize(ref.double()), ref_labels, False
    s = (q @ r.T).tolist()
    aps = []
    for a in range(len(labels)):
        refs = [j for j in range(len(rl)) if not (in_batch and not include_query and j == a)]
        pos = [j for j in refs if int(rl[j]) == int(labels[a])]
        if not pos:
            continue
        total = 0.0
        for i in pos:
            rank, rank_p = 1.0, 1.0
            for j in refs:
                if j == i:
                    continue
                d = s[a][j] - s[a][i]
                if j in pos:
                    rank += pos_step(d)
                    rank_p += pos_step(d)
                else:
                    rank += neg_step(d)
            total += rank_p / rank
        aps.append(total / len(pos))
    return 1.0 - sum(aps) / len(aps) if aps else 0.0


def brute_calibration(emb, labels, ref=None, ref_labels=None, alpha=0.9, beta=0.6):
    q = normalize(emb.double())
    r, rl, in_batch = (q, labels, True) if ref is None else (normalize(ref.double()), ref_labels, False)
    s = q @ r.T
    pos_terms, neg_terms = [], []
    for a in range(len(labels)):
        for j in range(len(rl)):
            if in_batch and a == j:
                continue
            if int(labels[a]) == int(rl[j]):
                pos_terms.append(max(0.0, alpha - float(s[a, j])))
            else:
                neg_terms.append(max(0.0, float(s[a, j]) - beta))

    def mean_nz(t):
        nz = [v for v in t if v > 0]
        return sum(nz) / len(nz) if nz else 0.0

    return mean_nz(pos_terms) + mean_nz(neg_terms)
