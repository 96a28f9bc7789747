"""The torch "tree" engine: flat or hierarchical labels on any device, one row sort per query.

:class:`TreeRanker` orders the gallery by label path, so the items sharing at least j levels with a query form a
contiguous range; the CPU count engine (:mod:`common.metrics.retrieval_count`) reuses these ranges.
:class:`TreeEngine` runs it chunk by chunk. The formulas and the tie rule are in the docstring of
:mod:`common.metrics.retrieval`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from common.metrics.relevance import map_relevance_table, pop_relevance_table
from common.metrics.retrieval_dense import (
    binary_metrics,
    dense_scores,
    graded_from_positions,
    sort_desc_pessimistic,
    sort_rows,
)
from common.metrics.retrieval_engine import RetrievalProblem, RowChunkEngine


class TreeRanker:
    """Dense scoring of flat or hierarchical (tree) labels with one row sort per query.

    The gallery is ordered by its label path from the coarsest column, so the items sharing at least j levels with
    a query form a contiguous range (nested over j): relevant items are gathered without scanning the row, their
    levels come from the nested ranges, and every position is ``#items >= score`` read off the sorted row (ties:
    irrelevant first, then by increasing level). Binary positives (column 0) are gathered the same way.
    """

    def __init__(self, labels: Tensor, g_idx: Tensor, gal_pos: Tensor) -> None:
        lab = labels[:, None] if labels.ndim == 1 else labels
        self.n_lv = lab.shape[1]
        self.gal_pos = gal_pos
        dev = labels.device
        # node id of every item at each depth j = 1..L (columns L-1 .. L-j), in coarse-first lexicographic order
        self.node_ids = []
        for depth in range(1, self.n_lv + 1):
            prefix = lab[:, self.n_lv - depth :].flip(1)
            self.node_ids.append(torch.unique(prefix, dim=0, return_inverse=True)[1])
        self.perm = torch.argsort(self.node_ids[-1][g_idx], stable=True)  # gallery positions, tree order
        self.sorted_ids = [ids[g_idx][self.perm].contiguous() for ids in self.node_ids]
        # binary classes (column 0): gallery positions grouped by label
        col0 = lab[:, 0]
        self.col0 = col0
        g0 = col0[g_idx]
        self.order0 = torch.argsort(g0, stable=True)
        self.uniq0, self.counts0 = torch.unique_consecutive(g0[self.order0], return_counts=True)
        self.starts0 = self.counts0.cumsum(0) - self.counts0
        self.m = g_idx.numel()
        self.dev = dev

    def _ranges(self, qi: Tensor) -> tuple[Tensor, Tensor]:
        """``(start, end) [C, L]``: tree-order range of the gallery items sharing >= j levels (column j-1)."""
        starts, ends = [], []
        for ids, sid in zip(self.node_ids, self.sorted_ids):
            qid = ids[qi].contiguous()
            starts.append(torch.searchsorted(sid, qid, side="left"))
            ends.append(torch.searchsorted(sid, qid, side="right"))
        return torch.stack(starts, 1), torch.stack(ends, 1)

    def binary(self, scores: Tensor, srt: Tensor, qi: Tensor, self_pos: Tensor, wanted, recall_at) -> dict:
        c, m = scores.shape
        ql = self.col0[qi]
        k = torch.searchsorted(self.uniq0, ql).clamp(max=self.uniq0.numel() - 1)
        cnt = torch.where(self.uniq0[k] == ql, self.counts0[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = torch.arange(p_max, device=self.dev)
        members = self.order0[(self.starts0[k][:, None] + ar[None, :]).clamp(max=m - 1)]
        slot = (ar[None, :] < cnt[:, None]) & (members != self_pos[:, None])
        p = torch.where(slot, scores.gather(1, members), -math.inf)
        p = torch.sort(p, dim=1, descending=True).values  # [C, P]
        npos = slot.sum(1)
        ge_all = m - torch.searchsorted(srt, p.contiguous(), side="left")  # items (any) scoring >= p_i
        ge_pos = (p[:, None, :] >= p[:, :, None]).sum(2)  # positives scoring >= p_i (itself included)
        return binary_metrics(npos, ge_all - ge_pos, wanted, recall_at)

    def graded(self, scores: Tensor, srt: Tensor, qi: Tensor, self_pos: Tensor, relevance, alpha, count_self, wanted):
        c, m = scores.shape
        dev = self.dev
        n_lv = self.n_lv
        start, end = self._ranges(qi)  # [C, L], nested: depth 1 widest
        n_rel_i = end[:, 0] - start[:, 0]
        r_max = max(int(n_rel_i.max()), 1)
        ar = torch.arange(r_max, device=dev)
        tpos = start[:, :1] + ar[None, :]  # tree-order positions [C, R]
        real = ar[None, :] < n_rel_i[:, None]
        gpos = self.perm[tpos.clamp(max=m - 1)]  # gallery positions
        real &= gpos != self_pos[:, None]
        level = torch.zeros(c, r_max, dtype=torch.long, device=dev)
        for d in range(n_lv):
            level += (tpos >= start[:, d : d + 1]) & (tpos < end[:, d : d + 1])
        level = torch.where(real, level, 0)
        rel_s = torch.where(real, scores.gather(1, gpos), -math.inf)
        counts = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=dev)
        counts.scatter_add_(1, level, real.double())
        n_valid = m - (self_pos >= 0).double()
        counts[:, 0] = n_valid - counts[:, 1:].sum(1)
        extra = torch.zeros_like(counts)
        if count_self:
            extra[:, n_lv] = (self_pos >= 0).double()
        tab_counts = counts + extra
        if relevance == "pop":
            table = pop_relevance_table(tab_counts, alpha)
        elif relevance == "map":
            if isinstance(alpha, (int, float)):
                raise ValueError("map relevance takes one weight per level as alpha, e.g. alpha=[1.0, 1.0]")
            table = map_relevance_table(tab_counts, alpha)
        else:
            raise ValueError(f"unknown relevance type {relevance!r}; use 'pop' or 'map'")
        rel_s, rel_t = sort_desc_pessimistic(rel_s, level)  # padding (-inf, level 0) last
        real = torch.arange(r_max, device=dev)[None, :] < (real.sum(1))[:, None]
        ge_all = m - torch.searchsorted(srt, rel_s.contiguous(), side="left")  # [C, R] any item >= s_k
        rel_asc = rel_s.flip(1).contiguous()  # ascending (padding -inf first)
        ge_rel = r_max - torch.searchsorted(rel_asc, rel_s.contiguous(), side="left")  # relevant >= s_k
        j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
        position = j[None, :] + (ge_all - ge_rel).double()
        return graded_from_positions(rel_t, position, real, (table, counts), n_lv, wanted)


class TreeEngine(RowChunkEngine):
    """Flat or hierarchical labels in torch (any device): one row sort per query, see :class:`TreeRanker`."""

    name = "tree"

    def __init__(self, problem: RetrievalProblem) -> None:
        super().__init__(problem)
        self.tree = TreeRanker(problem.labels, problem.g_idx, problem.gal_pos)

    def default_chunk(self) -> int:
        return max(1, self.elems_per_chunk // (4 * max(self.problem.m, 1)))

    def finish(self, qi: Tensor, payload: None) -> dict[str, Tensor]:
        pb = self.problem
        out: dict[str, Tensor] = {}
        self_pos = pb.gal_pos[qi] if pb.exclude_self else torch.full_like(qi, -1)
        scores, _ = dense_scores(pb.emb[qi], pb.gallery, self_pos)
        srt = sort_rows(scores)
        if pb.want_binary:
            out.update(self.tree.binary(scores, srt, qi, self_pos, pb.want_binary, pb.recall_at))
        rel = (pb.relevance, pb.alpha, pb.count_self)
        out.update(self.tree.graded(scores, srt, qi, self_pos, *rel, pb.want_graded))
        return out
