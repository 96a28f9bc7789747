"""Dense scoring and the per-query metric formulas shared by the engines, plus the torch "dense" engine.

Holds the gallery scorer that makes duplicated embeddings tie exactly (:class:`Gallery`), the binary metrics from
the counts ``n_i`` (:func:`binary_metrics`, used by every engine), the graded metrics from the positions of the
relevant items (:func:`graded_from_positions`, used by the torch engines) and :class:`DenseEngine` (shared levels
computed for every pair, any label kind, multi-label included). The formulas and the pessimistic tie rule are in the
docstring of :mod:`common.metrics.retrieval`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from common.metrics.relevance import relevance_table, shared_levels
from common.metrics.retrieval_engine import RowChunkEngine


class Gallery:
    """Gallery embeddings with their distinct rows: scores are computed against distinct vectors and expanded, so
    duplicated embeddings always get bit-identical scores (BLAS kernels may round identical columns differently
    depending on their position, which would silently break exact ties)."""

    def __init__(self, gal: Tensor) -> None:
        self.gal = gal
        uniq, inv = torch.unique(gal, dim=0, return_inverse=True)
        self.uniq, self.inv = (uniq, inv) if uniq.shape[0] < gal.shape[0] else (gal, None)

    def scores(self, q: Tensor) -> Tensor:
        s = q.to(self.uniq.dtype) @ self.uniq.T
        return s if self.inv is None else s[:, self.inv]


def dense_scores(q: Tensor, gal: Gallery, self_pos: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(scores [C, M], valid [C, M])``: cosine scores with the query's own gallery entry set to -inf."""
    scores = gal.scores(q)
    valid = torch.ones_like(scores, dtype=torch.bool)
    if self_pos is not None:
        has_self = self_pos >= 0
        rows = torch.arange(q.shape[0], device=q.device)[has_self]
        valid[rows, self_pos[has_self]] = False
    return scores.masked_fill(~valid, -math.inf), valid


def _binary_positive(q_lab: Tensor, g_lab: Tensor, kind: str) -> Tensor:
    """``[C, M]`` bool: same class (flat / column 0) or at least one shared label (multi-label)."""
    if kind == "multilabel":
        return (q_lab.float() @ g_lab.float().T) > 0.5
    return q_lab[:, None] == g_lab[None, :]


def _count_at_or_above(scores: Tensor, exclude: Tensor, thresholds: Tensor) -> Tensor:
    """``[C, P]``: for each row, the number of entries of ``scores [C, M]`` not in ``exclude [C, M]`` that are
    ``>=`` each threshold ``[C, P]`` (-inf thresholds are padding and get meaningless counts).

    Only entries at or above the row's lowest finite threshold can count: they are gathered (usually a few per row)
    and compared with the thresholds. When there are many (poor embeddings), rows are sorted instead.
    """
    c, m = scores.shape
    finite = torch.isfinite(thresholds)
    lowest = torch.where(finite, thresholds, math.inf).min(1).values  # [C]
    cand = (scores >= lowest[:, None]) & ~exclude
    n_cand = int(cand.sum())
    if n_cand > c * m // 8:
        srt = sort_rows(scores.masked_fill(exclude, -math.inf))
        return m - torch.searchsorted(srt, thresholds.contiguous(), side="left")
    rows, cols = cand.nonzero(as_tuple=True)
    counts = torch.zeros(c, thresholds.shape[1], dtype=torch.long, device=scores.device)
    counts.index_add_(0, rows, (scores[rows, cols][:, None] >= thresholds[rows]).long())
    return counts


def sort_rows(x: Tensor) -> Tensor:
    """Ascending sort of each row (numpy's vectorised sort on CPU, torch elsewhere)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _binary_metrics_from_scores(
    scores: Tensor, pos: Tensor, wanted: Sequence[str], recall_at: Sequence[int]
) -> dict[str, Tensor]:
    """Per-query binary metrics (NaN where a query has no positive) from scores ``[C, M]`` (-inf = not in gallery)."""
    npos = pos.sum(1)  # [C]
    p_max = max(int(npos.max()), 1)
    pos_scores = torch.topk(scores.masked_fill(~pos, -math.inf), p_max, dim=1).values  # [C, P], descending
    n_neg = _count_at_or_above(scores, pos | ~torch.isfinite(scores), pos_scores)  # [C, P]
    return binary_metrics(npos, n_neg, wanted, recall_at)


def binary_metrics(npos: Tensor, n_neg: Tensor, wanted: Sequence[str], recall_at: Sequence[int]) -> dict[str, Tensor]:
    """Per-query binary metrics from the number of positives ``npos [C]`` and, for the i-th best positive, the
    number of negatives scoring at least as high, ``n_neg [C, P]`` (columns beyond ``npos`` are ignored)."""
    has_pos = npos > 0
    p_max = n_neg.shape[1]
    i = torch.arange(1, p_max + 1, device=n_neg.device, dtype=torch.float64)  # 1-based positive index
    is_real = i[None, :] <= npos[:, None]  # [C, P]
    position = i[None, :] + n_neg.double()  # pessimistic position of the i-th positive
    r = npos.double().clamp(min=1)[:, None]
    nan = torch.full_like(r[:, 0], math.nan)
    out: dict[str, Tensor] = {"_has_pos": has_pos}
    for name in wanted:
        if name == "recall":
            for k in recall_at:
                out[f"recall@{int(k)}"] = torch.where(has_pos, (position[:, 0] <= int(k)).double(), nan)
        elif name == "precision_at_1":
            out["precision@1"] = torch.where(has_pos, (position[:, 0] == 1).double(), nan)
        elif name == "r_precision":
            hit = is_real & (position <= r)
            out["r_precision"] = torch.where(has_pos, hit.sum(1).double() / r[:, 0], nan)
        elif name == "map_at_r":
            hit = is_real & (position <= r)
            out["map@r"] = torch.where(has_pos, torch.where(hit, i / position, 0.0).sum(1) / r[:, 0], nan)
        elif name == "map":
            out["map"] = torch.where(has_pos, torch.where(is_real, i / position, 0.0).sum(1) / r[:, 0], nan)
    return out


def sort_desc_pessimistic(scores: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by decreasing score, ties by increasing level (pessimistic); returns (scores, levels)."""
    order = torch.sort(levels, dim=1, stable=True).indices
    s = scores.gather(1, order)
    order2 = torch.sort(s, dim=1, descending=True, stable=True).indices
    return s.gather(1, order2), levels.gather(1, order.gather(1, order2))


def _graded_metrics(
    scores: Tensor, levels: Tensor, valid: Tensor, table: Tensor, n_lv: int, wanted: Sequence[str]
) -> dict[str, Tensor]:
    """Per-query NDCG / H-AP / ASI (NaN where a query has no relevant item).

    Only relevant items (level > 0) need a position: irrelevant scores are sorted once per row and each relevant
    item's position is ``1 + #relevant before it + #irrelevant with score >= its own`` (pessimistic ties); the
    relevant items themselves are sorted by (score desc, level asc). Work is ``O(M log M)`` per query plus
    ``O(R log R)`` for its R relevant items.
    """
    dev = scores.device
    c, m = scores.shape
    counts = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=dev)
    counts.scatter_add_(1, levels, valid.double())  # [C, T+1] gallery items at each level
    relmask = levels > 0  # invalid items have level 0
    n_rel_i = relmask.sum(1)  # [C]
    r_max = max(int(n_rel_i.max()), 1)
    # pack relevant items into [C, R] (row-major nonzero keeps rows together)
    rows, cols = relmask.nonzero(as_tuple=True)
    row_start = n_rel_i.cumsum(0) - n_rel_i
    off = torch.arange(rows.numel(), device=dev) - row_start[rows]
    rel_s = torch.full((c, r_max), -math.inf, dtype=scores.dtype, device=dev)
    rel_t = torch.zeros(c, r_max, dtype=torch.long, device=dev)
    rel_s[rows, off] = scores[rows, cols]
    rel_t[rows, off] = levels[rows, cols]
    rel_s, rel_t = sort_desc_pessimistic(rel_s, rel_t)  # padding (-inf, level 0) goes last
    real = torch.arange(r_max, device=dev)[None, :] < n_rel_i[:, None]  # [C, R]
    # irrelevant items at or above each relevant one (ties: the irrelevant one first)
    irr_sorted = sort_rows(scores.masked_fill(relmask, -math.inf))
    n_irr = m - torch.searchsorted(irr_sorted, rel_s.contiguous(), side="left")  # [C, R]
    j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
    position = j[None, :] + n_irr.double()  # [C, R] 1-based position in the full ranking
    table_counts = (table, counts)
    return graded_from_positions(rel_t, position, real, table_counts, n_lv, wanted)


def graded_from_positions(
    rel_t: Tensor, position: Tensor, real: Tensor, table_counts: tuple[Tensor, Tensor], n_lv: int, wanted
) -> dict[str, Tensor]:
    """NDCG / H-AP / ASI from the relevant items of each query in ranking order.

    ``rel_t [C, R]`` levels (1..T) in ranking order, ``position [C, R]`` their 1-based positions in the full
    ranking, ``real [C, R]`` marks actual items (the rest is padding), ``table [C, T+1]`` the relevance of each
    level and ``counts [C, T+1]`` the number of gallery items at each level.
    """
    table, counts = table_counts
    dev = rel_t.device
    c, r_max = rel_t.shape
    n_rel = counts[:, 1:].sum(1)
    has_rel = n_rel > 0
    nan = torch.full((c,), math.nan, dtype=torch.float64, device=dev)
    j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
    out: dict[str, Tensor] = {"_has_rel": has_rel}
    onehots = {lv: (rel_t == lv) & real for lv in range(1, n_lv + 1)}
    if "ndcg" in wanted:
        gains = 2.0 ** torch.arange(n_lv + 1, dtype=torch.float64, device=dev) - 1.0
        dcg = torch.where(real, gains[rel_t] / torch.log2(1.0 + position), 0.0).sum(1)
        disc = 1.0 / torch.log2(2.0 + torch.arange(r_max, dtype=torch.float64, device=dev))  # positions 1..R
        cdisc = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), disc.cumsum(0)])
        idcg = torch.zeros(c, dtype=torch.float64, device=dev)
        above = torch.zeros(c, dtype=torch.long, device=dev)
        for lv in range(n_lv, 0, -1):  # ideal: levels in decreasing order
            end = above + counts[:, lv].long()
            idcg += gains[lv] * (cdisc[end] - cdisc[above])
            above = end
        out["ndcg"] = torch.where(has_rel, dcg / idcg.clamp(min=1e-300), nan)
    if "hap" in wanted:
        rel_k = torch.where(real, table.gather(1, rel_t), 0.0)  # [C, R]
        hrank = rel_k.clone()
        for lv in range(1, n_lv + 1):
            before = onehots[lv].double().cumsum(1) - onehots[lv].double()  # level-lv items ranked before
            hrank += torch.minimum(rel_k, table[:, lv : lv + 1]) * before
        contrib = torch.where(real, hrank / position, 0.0).sum(1)
        total_rel = (table * counts).sum(1)
        out["hap"] = torch.where(has_rel, contrib / total_rel.clamp(min=1e-300), nan)
    if "asi" in wanted:
        # level histogram of the predicted top-n for n = 1..R: relevant items placed at their positions
        in_top = real & (position <= n_rel[:, None])
        slot = (position.long() - 1).clamp(max=r_max - 1)
        n_pos = j[None, :]  # n = 1..R
        inter = torch.zeros(c, r_max, dtype=torch.float64, device=dev)
        above = torch.zeros(c, 1, dtype=torch.float64, device=dev)
        for lv in range(n_lv, 0, -1):
            grid = torch.zeros(c, r_max, dtype=torch.float64, device=dev)
            grid.scatter_add_(1, slot, (onehots[lv] & in_top).double())
            ideal = torch.minimum((n_pos - above).clamp(min=0.0), counts[:, lv : lv + 1])
            inter += torch.minimum(grid.cumsum(1), ideal)
            above = above + counts[:, lv : lv + 1]
        asi = torch.where(n_pos <= n_rel[:, None], inter / n_pos, 0.0).sum(1) / n_rel.clamp(min=1)
        out["asi"] = torch.where(has_rel, asi, nan)
    return out


class DenseEngine(RowChunkEngine):
    """Dense scores in the embeddings' dtype; binary metrics by counting, graded ones with shared levels computed
    for every pair (any label kind, multi-label included). Torch, any device."""

    name = "dense"

    def default_chunk(self) -> int:
        return max(1, self.elems_per_chunk // (max(self.problem.m, 1) * (4 if self.problem.want_graded else 1)))

    def finish(self, qi: Tensor, payload: None) -> dict[str, Tensor]:
        pb = self.problem
        out: dict[str, Tensor] = {}
        scores, valid = dense_scores(pb.emb[qi], pb.gallery, pb.gal_pos[qi] if pb.exclude_self else None)
        if pb.want_binary:
            pos = _binary_positive(pb.binary_labels[qi], pb.binary_labels[pb.g_idx], pb.kind) & valid
            out.update(_binary_metrics_from_scores(scores, pos, pb.want_binary, pb.recall_at))
        if pb.want_graded:
            c, n_lv = qi.numel(), pb.n_levels
            levels = shared_levels(pb.labels[qi], pb.labels[pb.g_idx]).masked_fill(~valid, 0)  # [C, M]
            extra = None
            if pb.count_self and pb.kind != "multilabel":
                extra = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=qi.device)
                extra[:, n_lv] = (pb.gal_pos[qi] >= 0).double()  # the query itself, at the finest level
            table = relevance_table(levels, n_lv, pb.relevance, pb.alpha, valid, extra)  # [C, T+1]
            out.update(_graded_metrics(scores, levels, valid, table, n_lv, pb.want_graded))
        return out
