"""Loop-based reference computations of H-AP and Sup-H-AP, written from the formulas (no vectorisation)."""

from __future__ import annotations

import math

from tests.helpers.supap_brute import h_minus, sig

__all__ = ["h_minus", "hap_row", "loss_brute", "pop_relevance", "shared", "sig", "step_h"]


def shared(a: list[int], b: list[int]) -> int:
    # HAPPIER's definition: the number of levels at which the labels are equal (nested hierarchies in the tests)
    return sum(int(x == y) for x, y in zip(a, b))


def pop_relevance(levels: list[int], num_levels: int, alpha: float = 1.0) -> list[float]:
    counts: dict[int, int] = {}
    for t in levels:
        counts[t] = counts.get(t, 0) + 1
    den = max(num_levels - 1, 1)
    return [0.0 if t == 0 else (t / den) ** alpha / counts[t] for t in levels]


def step_h(x: float) -> float:
    return 1.0 if x >= 0 else 0.0


def h_rank_step(x: float, beta=25.0, gamma=0.5, leak=10.0) -> float:
    if x > 0:
        return step_h(x) if gamma > 1 else min(beta * x + gamma, 1.0)
    return leak * x


def hap_row(scores: list[float], levels: list[int], rel: list[float], lower=step_h, higher_h=step_h) -> float | None:
    """H-AP of one query: sum_k Hrank(k)/rank(k) / sum_k rel(k) over k with rel > 0.

    ``lower`` is the step for items of strictly lower level in rank(k); ``higher_h`` the H-rank step for items of
    strictly higher level. With both = H this is the exact H-AP.
    """
    total_rel = sum(rel)
    if total_rel <= 0:
        return None
    acc = 0.0
    for k in range(len(scores)):
        if rel[k] <= 0:
            continue
        rank, hrank = 1.0, rel[k]
        for j in range(len(scores)):
            if j == k:
                continue
            x = scores[j] - scores[k]
            rank += lower(x) if levels[j] < levels[k] else step_h(x)
            hs = higher_h(x) if levels[j] > levels[k] else step_h(x)
            hrank += min(rel[k], rel[j]) * hs
        acc += hrank / rank
    return acc / total_rel


def loss_brute(emb, labels, ref_emb=None, ref_labels=None, include_query=True, rel_fn=None, **steps) -> float:
    """mean_q (1 - H-AP_q) with cosine scores; the query is its own item in-batch iff ``include_query``."""
    in_batch = ref_emb is None
    if in_batch:
        ref_emb, ref_labels = emb, labels
    e = [_unit(v) for v in emb.tolist()]
    r = [_unit(v) for v in ref_emb.tolist()]
    lab, rlab = labels.tolist(), ref_labels.tolist()
    num_levels = len(lab[0])
    values = []
    for q in range(len(e)):
        idx = [j for j in range(len(r)) if not (in_batch and not include_query and j == q)]
        scores = [sum(a * b for a, b in zip(e[q], r[j])) for j in idx]
        levels = [shared(lab[q], rlab[j]) for j in idx]
        rel = rel_fn(levels) if rel_fn else pop_relevance(levels, num_levels)
        v = hap_row(scores, levels, rel, **steps)
        if v is not None:
            values.append(1.0 - v)
    return sum(values) / len(values)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]
