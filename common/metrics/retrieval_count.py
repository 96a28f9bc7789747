"""The CPU "count" engine for graded (and binary) metrics on flat or hierarchical labels.

Dense BLAS scores per chunk; the relevant items of a query come from the label tree, and the number of irrelevant
items scoring ``>=`` each of them from a histogram over a monotone cell map of the scores (:func:`_count_cells`,
with its monotonicity argument): ``O(N)`` per query, no row sort. :class:`CountEngine` runs it chunk by chunk and
:func:`_graded_from_ascending` turns the positions into NDCG / H-AP / ASI. The formulas and the tie rule are in the
docstring of :mod:`common.metrics.retrieval`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from common.metrics.relevance import map_relevance_table, pop_relevance_table
from common.metrics.retrieval_dense import binary_metrics
from common.metrics.retrieval_engine import RetrievalProblem, RowChunkEngine
from common.metrics.retrieval_precision import exact_matmul_mode
from common.metrics.retrieval_tree import TreeRanker

MAX_LEVELS = 255  # the count engine packs a level into 8 bits of its sort key
_SPARSE_FRACTION = 16  # count by candidates when at most 1/16 of the scores reach the lowest threshold
_CELL_ROWS = 8  # rows per cell histogram
_CELLS_PER_THRESHOLD = 8
_GRADED_BLOCK = 1 << 17  # relevant items per block of rows in the count engine


def _count_at_or_above_sorted(
    scores: np.ndarray, thresholds: np.ndarray, n_real: np.ndarray, method: str = "auto", cells_per_thr: int = 0
) -> np.ndarray:
    """``[C, K]`` int64: the number of entries of ``scores[r]`` that are ``>= thresholds[r, k]``.

    ``thresholds [C, K]`` holds ``n_real[r]`` ascending real thresholds first in each row (the rest is ignored and
    gets 0). Exact for float32 and float64. ``method``: ``"sparse"`` gathers the entries at or above the row's
    lowest threshold and looks each up among the thresholds (cheap when few entries reach it); ``"cells"`` is the
    ``O(M)`` cell histogram of :func:`_count_cells`; ``"auto"`` picks sparse when at most 1/16 of the entries reach
    the lowest threshold.
    """
    c, m = scores.shape
    if thresholds.dtype != scores.dtype:
        raise ValueError(f"thresholds ({thresholds.dtype}) must have the scores' dtype ({scores.dtype}) to be exact")
    cells_per_thr = cells_per_thr or _CELLS_PER_THRESHOLD
    out = np.zeros(thresholds.shape, dtype=np.int64)
    if thresholds.shape[1] == 0 or not n_real.any():
        return out
    lowest = np.where(n_real > 0, thresholds[:, 0], np.inf).astype(scores.dtype)
    reach = scores >= lowest[:, None] if method != "cells" else None
    if method == "sparse" or (method == "auto" and np.count_nonzero(reach) * _SPARSE_FRACTION <= c * m):
        flat = np.flatnonzero(reach)
        vals = scores.ravel()[flat]
        bounds = np.searchsorted(flat, np.arange(c + 1) * m)
        for r in np.flatnonzero(n_real > 0):
            nr = int(n_real[r])
            idx = np.searchsorted(thresholds[r, :nr], vals[bounds[r] : bounds[r + 1]], side="right")
            hist = np.bincount(idx, minlength=nr + 1)  # hist[b]: entries with exactly b thresholds <= them
            out[r, :nr] = np.cumsum(hist[::-1])[::-1][1:]
        return out
    for r0 in range(0, c, _CELL_ROWS):  # a few rows per histogram: its tables stay in cache
        rs = slice(r0, r0 + _CELL_ROWS)
        out[rs] = _count_cells(scores[rs], thresholds[rs], n_real[rs], cells_per_thr)
    return out


def _count_cells(scores: np.ndarray, thresholds: np.ndarray, n_real: np.ndarray, cells_per_thr: int) -> np.ndarray:
    """:func:`_count_at_or_above_sorted` by a histogram over a monotone cell map (a few rows at a time).

    Per row, ``f(s) = clip(trunc(fl(fl(s - a) * w) + 1.5), 0, G + 2)`` with ``a`` the lowest threshold and
    ``w = G / (highest - lowest)``; every floating-point step is monotone, so ``f`` is non-decreasing in ``s``:
    ``f(s) > f(t)`` implies ``s > t`` and ``f(s) < f(t)`` implies ``s < t``, whatever the rounding. Hence
    ``#{s >= t} = #{f(s) > f(t)} + #{f(s) = f(t), s >= t}``: the first term is a suffix sum of the cell histogram,
    the second needs exact comparisons only for the entries in a cell that holds a threshold (a small fraction with
    ``G = 8 x`` the number of thresholds). ``O(M + K)`` per row instead of the ``O(M log M)`` of a sort.
    """
    b, m = scores.shape
    k = thresholds.shape[1]
    dt = scores.dtype
    real = np.arange(k)[None, :] < n_real[:, None]
    has = n_real > 0
    lo = np.where(has, thresholds[:, 0], 0).astype(dt)
    hi = np.where(has, thresholds[np.arange(b), np.maximum(n_real - 1, 0)], 0).astype(dt)
    g = int(min(max(16, cells_per_thr * int(n_real.max())), 2 * m, 1 << 21))
    span = hi.astype(np.float64) - lo.astype(np.float64)
    w = np.where(span > 0, g / np.maximum(span, 1e-300), 1.0)
    w = np.minimum(w, 1e30).astype(dt)  # any positive finite scale keeps f monotone
    n_cells = g + 3
    offset = (np.arange(b, dtype=np.int64) * n_cells)[:, None]

    def cells(x: np.ndarray) -> np.ndarray:  # flat (row, cell) ids; the same arithmetic for scores and thresholds
        y = np.subtract(x, lo[:, None], dtype=dt)
        np.multiply(y, w[:, None], out=y)
        np.add(y, dt.type(1.5), out=y)
        np.clip(y, 0, g + 2, out=y)
        ids = y.astype(np.int64)
        ids += offset
        return ids

    cell = cells(scores).ravel()  # [B*M]
    above = m - np.cumsum(np.bincount(cell, minlength=b * n_cells).reshape(b, n_cells), axis=1).ravel()
    thr = thresholds[real]  # real thresholds, row after row, ascending within a row
    thr_cell = cells(thresholds)[real]  # non-decreasing
    n_ge = np.take(above, thr_cell)  # entries in higher cells
    per_cell = np.bincount(thr_cell, minlength=b * n_cells)
    first = np.cumsum(per_cell) - per_cell  # index in ``thr`` of the first threshold of each cell
    fine = np.flatnonzero(np.take(per_cell.astype(bool), cell))  # entries sharing a cell with a threshold
    if fine.size:
        f_cell = np.take(cell, fine)
        f_val = np.take(scores.ravel(), fine)
        f_first = np.take(first, f_cell)
        f_n = np.take(per_cell, f_cell)
        le = (np.take(thr, f_first) <= f_val).astype(np.int64)  # thresholds of the cell that are <= the entry
        heavy = f_n > 16
        sel = np.flatnonzero((f_n > 1) & ~heavy)
        j = 1
        while sel.size:
            le[sel] += np.take(thr, f_first[sel] + j) <= f_val[sel]
            j += 1
            sel = sel[f_n[sel] > j]
        if heavy.any():  # many tied or crowded thresholds in one cell: binary search within the cell
            h = np.flatnonzero(heavy)
            h = h[np.argsort(f_cell[h], kind="stable")]
            ids, seg = np.unique(f_cell[h], return_index=True)
            for cell_id, at in zip(ids, np.split(h, seg[1:])):
                t0, tn = int(first[cell_id]), int(per_cell[cell_id])
                le[at] = np.searchsorted(thr[t0 : t0 + tn], f_val[at], side="right")
        # the entry is >= the cell's thresholds first .. first + le - 1: a difference array over ``thr``
        diff = np.bincount(f_first, minlength=thr.size + 1) - np.bincount(f_first + le, minlength=thr.size + 1)
        n_ge += np.cumsum(diff)[: thr.size]
    out = np.zeros((b, k), dtype=np.int64)
    out[real] = n_ge
    return out


class CountEngine(RowChunkEngine):
    """CPU engine for graded (and binary) metrics on flat or hierarchical labels.

    Per chunk: dense scores by BLAS in the embeddings' dtype; binary positives from the column-0 label groups
    and graded relevant items from the label tree (:class:`TreeRanker`'s contiguous ranges), so no ``[C, M]`` label
    matrix is built. The relevant items of a query are sorted by (score, level) and masked out of the row; the
    number of irrelevant items scoring ``>=`` each of them comes from :func:`_count_at_or_above_sorted`. The
    position of the k-th relevant item in the (pessimistic) ranking is ``k + #irrelevant >= its score``.
    """

    name = "count"
    split_rows = True
    elems_per_chunk = 1 << 25  # 32M scores (128 MB in float32) per chunk

    def __init__(self, problem: RetrievalProblem) -> None:
        super().__init__(problem)
        pb = problem
        gallery = pb.gallery
        self.emb = pb.emb
        self.uniq = gallery.uniq  # distinct gallery vectors [U, D]
        self.inv = gallery.inv.numpy() if gallery.inv is not None else None
        self.m = pb.m
        self.exclude_self, self.want_binary, self.want_graded, self.recall_at = (
            pb.exclude_self,
            pb.want_binary,
            pb.want_graded,
            pb.recall_at,
        )
        self.relevance, self.alpha, self.count_self = pb.relevance, pb.alpha, pb.count_self
        self.n_lv = pb.n_levels
        tree = TreeRanker(pb.labels, pb.g_idx, pb.gal_pos)
        self.node_ids = [x.numpy() for x in tree.node_ids]
        self.sorted_ids = [x.numpy() for x in tree.sorted_ids]
        self.perm = tree.perm.numpy().astype(np.int32)  # m < 2^31
        self.col0 = tree.col0.numpy()
        self.order0, self.uniq0 = tree.order0.numpy(), tree.uniq0.numpy()
        self.counts0, self.starts0 = tree.counts0.numpy(), tree.starts0.numpy()
        self.gal_pos = pb.gal_pos.numpy()
        self.buf: Tensor | None = None

    def default_chunk(self) -> int:
        return max(1, self.elems_per_chunk // (max(self.m, 1) * (self.emb.element_size() // 4)))

    def produce(self, qi: Tensor) -> np.ndarray:
        """``[C, M]`` scores of the chunk (a reused buffer), -inf at the query's own gallery entry. ``torch.mm``
        rather than numpy's BLAS: its OpenMP threads go idle at once, numpy's keep spinning into the counting."""
        qn = qi.numpy()
        c = qn.size
        buf = self.buf
        if buf is None or buf.shape[0] < c:
            buf = self.buf = torch.empty(c, self.m, dtype=self.emb.dtype)
        out = buf[:c]
        q = self.emb[qi]
        with exact_matmul_mode():
            if self.inv is None:
                torch.mm(q, self.uniq.T, out=out)
            else:  # distinct vectors scored once, so duplicates tie exactly
                torch.index_select(q @ self.uniq.T, 1, torch.from_numpy(self.inv), out=out)
        scores = out.numpy()
        if self.exclude_self:
            sp = self.gal_pos[qn]
            has = sp >= 0
            scores[np.flatnonzero(has), sp[has]] = -np.inf
        return scores

    def finish(self, qi: Tensor, scores: np.ndarray) -> dict[str, Tensor]:
        qn = qi.numpy()
        self_pos = self.gal_pos[qn] if self.exclude_self else np.full(qn.size, -1)
        out: dict[str, Tensor] = {}
        if self.want_binary:
            out.update(self._binary(qn, scores, self_pos))
        if self.want_graded:
            out.update(self._graded(qn, scores, self_pos))
        return out

    def _binary(self, qn: np.ndarray, scores: np.ndarray, self_pos: np.ndarray) -> dict[str, Tensor]:
        c, m = scores.shape
        ql = self.col0[qn]
        k = np.minimum(np.searchsorted(self.uniq0, ql), self.uniq0.size - 1)
        cnt = np.where(self.uniq0[k] == ql, self.counts0[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = np.arange(p_max)
        members = self.order0[np.minimum(self.starts0[k][:, None] + ar, m - 1)]
        slot = (ar < cnt[:, None]) & (members != self_pos[:, None])
        npos = slot.sum(1)
        p_asc = np.sort(np.where(slot, np.take_along_axis(scores, members, 1), np.inf), axis=1)  # real ones first
        ge_all = _count_at_or_above_sorted(scores, p_asc, npos)  # [C, P] any item >= p
        # positives >= p: everything from the first of p's ties on (ascending order)
        start = np.concatenate([np.ones((c, 1), bool), p_asc[:, 1:] != p_asc[:, :-1]], axis=1)
        tie_start = np.maximum.accumulate(np.where(start, ar, 0), axis=1)
        n_neg_asc = ge_all - (npos[:, None] - tie_start)
        # the i-th best positive is the (npos - 1 - i)-th in ascending order
        n_neg = np.take_along_axis(n_neg_asc, np.clip(npos[:, None] - 1 - ar, 0, None), 1)
        return binary_metrics(torch.from_numpy(npos), torch.from_numpy(n_neg), self.want_binary, self.recall_at)

    def _ranges(self, qn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = [], []
        for ids, sid in zip(self.node_ids, self.sorted_ids):
            qid = ids[qn]
            starts.append(np.searchsorted(sid, qid, side="left"))
            ends.append(np.searchsorted(sid, qid, side="right"))
        return np.stack(starts, 1), np.stack(ends, 1)

    def _graded(self, qn: np.ndarray, scores: np.ndarray, self_pos: np.ndarray) -> dict[str, Tensor]:
        start, end = self._ranges(qn)  # [C, L] tree-order ranges, nested: depth 1 widest
        n_cand = end[:, 0] - start[:, 0]
        step = max(1, _GRADED_BLOCK // max(int(n_cand.max()), 1))  # row blocks of relevant items stay in cache
        outs = [
            self._graded_block(scores[r : r + step], start[r : r + step], end[r : r + step], self_pos[r : r + step])
            for r in range(0, qn.size, step)
        ]
        return {key: torch.from_numpy(np.concatenate([o[key] for o in outs])) for key in outs[0]}

    def _graded_block(self, scores: np.ndarray, start: np.ndarray, end: np.ndarray, self_pos: np.ndarray) -> dict:
        b, m = scores.shape
        n_lv = self.n_lv
        n_cand = end[:, 0] - start[:, 0]
        r_max = max(int(n_cand.max()), 1)
        ar = np.arange(r_max, dtype=np.int32)
        tpos = start[:, :1].astype(np.int32) + ar  # [B, R] tree-order positions
        in_range = ar < n_cand[:, None]
        # level = number of nested ranges holding the position: +1 at each range start, -1 at its end, cumsum
        steps = np.zeros((b, r_max + 1), dtype=np.int32)
        rows = np.arange(b)
        for d in range(n_lv):
            np.add.at(steps, (rows, start[:, d] - start[:, 0]), 1)
            np.add.at(steps, (rows, end[:, d] - start[:, 0]), -1)
        level = np.cumsum(steps[:, :r_max], axis=1, dtype=np.int32)
        gpos = np.take(self.perm, np.minimum(tpos, m - 1, out=tpos))  # gallery positions
        real = in_range & (gpos != self_pos[:, None])
        level[~real] = 0
        n_rel = real.sum(1)
        flat = gpos + (np.arange(b) * m)[:, None]  # [B, R] int64 index into the block
        rel_s = np.take(scores, flat)
        np.put(scores, flat[in_range], -np.inf)  # relevant items out: count the irrelevant ones (our buffer)
        counts = np.bincount((level + (np.arange(b, dtype=np.int32) * (n_lv + 1))[:, None]).ravel(),
                             minlength=b * (n_lv + 1)).reshape(b, n_lv + 1).astype(np.float64)  # fmt: skip
        counts[:, 0] = m - (self_pos >= 0) - n_rel
        tab_counts = counts.copy()
        if self.count_self:
            tab_counts[:, n_lv] += self_pos >= 0  # the query itself, at the finest level (HAPPIER's convention)
        if self.relevance == "pop":
            table = pop_relevance_table(torch.from_numpy(tab_counts), self.alpha).numpy()
        else:
            table = map_relevance_table(torch.from_numpy(tab_counts), self.alpha).numpy()
        # relevant items by (score ascending, level descending): the reverse of the pessimistic ranking
        rel_s += 0.0  # -0 -> +0
        if scores.dtype == np.float32:
            bits = rel_s.view(np.int32)
            key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)  # order-preserving integer key
            key <<= 8
            key |= 255 - level
            key[~real] = np.iinfo(np.int64).max
            key.sort(axis=1)
            level = (255 - (key & 255)).astype(np.int32)
            key >>= 8
            bits = key.astype(np.int32)
            rel_s = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.float32)
        else:
            order = np.lexsort((255 - level, np.where(real, rel_s, np.inf)), axis=-1)
            level, rel_s = np.take_along_axis(level, order, 1), np.take_along_axis(rel_s, order, 1)
        real = ar < n_rel[:, None]
        level[~real] = 0
        rel_s[~real] = np.inf
        n_irr = _count_at_or_above_sorted(scores, rel_s, n_rel)  # [B, R]
        position = n_rel[:, None] - ar + n_irr  # 1-based, in the full ranking
        return _graded_from_ascending(level, position, real, table, counts, n_lv, self.want_graded)


def _graded_from_ascending(
    level: np.ndarray, position: np.ndarray, real: np.ndarray, table: np.ndarray, counts: np.ndarray, n_lv: int, wanted
) -> dict[str, np.ndarray]:
    """NDCG / H-AP / ASI per query from its relevant items in *reverse* ranking order.

    ``level [C, R]`` (1..T), ``position [C, R]`` (1-based, full ranking), ``real [C, R]`` (the rest is padding),
    ``table [C, T+1]`` the relevance of each level and ``counts [C, T+1]`` the gallery items at each level.
    """
    c, r_max = level.shape
    n_rel = counts[:, 1:].sum(1)
    has_rel = n_rel > 0
    out: dict[str, np.ndarray] = {"_has_rel": has_rel}
    pos = np.where(real, position, 1).astype(np.float64)
    flat_level = level + (np.arange(c, dtype=np.int32) * (n_lv + 1))[:, None]  # index into [C, T+1] tables
    if "ndcg" in wanted:
        gains = 2.0 ** np.arange(n_lv + 1) - 1.0
        dcg = (gains[level] / np.log2(1.0 + pos)).sum(1)  # padding has level 0, gain 0
        disc = 1.0 / np.log2(2.0 + np.arange(r_max))  # positions 1..R
        cdisc = np.concatenate([[0.0], np.cumsum(disc)])
        idcg = np.zeros(c)
        above = np.zeros(c, dtype=np.int64)
        for lv in range(n_lv, 0, -1):  # ideal: levels in decreasing order
            end = above + counts[:, lv].astype(np.int64)
            idcg += gains[lv] * (cdisc[end] - cdisc[above])
            above = end
        out["ndcg"] = np.where(has_rel, dcg / np.maximum(idcg, 1e-300), np.nan)
    if "hap" not in wanted and "asi" not in wanted:
        return out
    rel_k = np.take(table, flat_level)  # [C, R] (level 0 has relevance 0)
    hrank = rel_k.copy()
    own_before = np.zeros((c, r_max), dtype=np.int32)  # items of the same level ranked before
    is_lv = np.empty((c, r_max), dtype=bool)
    before = np.empty((c, r_max), dtype=np.int32)
    term = np.empty((c, r_max))
    present = counts[:, 1:].sum(0) > 0
    for lv in range(1, n_lv + 1):
        if not present[lv - 1]:
            continue
        np.equal(level, lv, out=is_lv)
        np.cumsum(is_lv, axis=1, dtype=np.int32, out=before)
        np.subtract(before[:, -1:], before, out=before)  # ranked before = later in this (reversed) order
        if "hap" in wanted:
            np.minimum(rel_k, table[:, lv : lv + 1], out=term)
            term *= before
            hrank += term
        np.copyto(own_before, before, where=is_lv)
    if "hap" in wanted:
        contrib = (hrank / pos).sum(1)  # padding has relevance 0
        total_rel = (table * counts).sum(1)
        out["hap"] = np.where(has_rel, contrib / np.maximum(total_rel, 1e-300), np.nan)
    if "asi" in wanted:
        n_max = int(n_rel.max()) if c else 0
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_max + 1))])  # H_0..H_nmax
        suffix = counts[:, ::-1].cumsum(1)[:, ::-1]  # items at level >= l
        above_lv = np.concatenate([suffix[:, 1:], np.zeros((c, 1))], axis=1).astype(np.int64)  # items above l
        n_r = n_rel.astype(np.int64)[:, None]
        # the item counts for n = first .. R, first = max(position, rank within its level + items above it)
        first = np.maximum(np.where(real, position, n_r + 1), own_before + 1 + np.take(above_lv, flat_level))
        np.minimum(first, n_r + 1, out=first)
        out["asi"] = np.where(has_rel, (harmonic[n_r] - harmonic[first - 1]).sum(1) / np.maximum(n_rel, 1), np.nan)
    return out
