"""SupRank losses of the TPAMI paper (Ramzi et al. 2025): SupRecall@k and SupNDCG.

Both use SupAP's ranks of the positives: H on positives and the upper bound H^- on negatives
(:func:`common.ranking.ap_ranks`), so they are computed in O(P x M) memory like SupAP.

* SupRecall:  R@k_q ~ sum_{i in P_q} sigma((k - rank(i)) / temp) / min(|P_q|, k), averaged over k in ``at_k``
  (1, 2, 4, 8, 16), temp = 1; loss = 1 - mean_q. Unlike the original reshape, queries may have different
  numbers of positives.
* SupNDCG, graded relevance (the TPAMI NDCG configs, ``hierarchy_level: MULTI`` in the original code). With
  ``[B, L]`` labels the relevance of item i to query q is t_i = number of hierarchy levels they share (0..L,
  :func:`common.ranking.shared_levels`) and its gain is 2^t_i - 1:

      rank(i) = 1 + sum_{j != i, t_j < t_i} H^-(s_qj - s_qi) + sum_{j != i, t_j >= t_i} H(s_qj - s_qi)
      DCG_q   = sum_{i: t_i > 0} (2^t_i - 1) / log2(1 + rank(i))
      IDCG_q  = sum_{r=1..M} g_(r) / log2(1 + r),   g_(1) >= g_(2) >= ... the gains sorted in decreasing order

  loss = 1 - mean_q DCG_q / IDCG_q over the queries with at least one relevant item. The upper bound H^- applies
  to every pair whose other item j is less relevant than i (with start >= 0.5 and offset >= 1, rank(i) >= the exact
  rank, so the loss bounds 1 - NDCG from above).
* With flat labels (or ``graded=False``: column 0 only) t is 0 or 1, the gains are 1 and this is binary NDCG:
  DCG_q = sum_{i in P_q} 1 / log2(1 + rank(i)), IDCG_q = sum_{r=1..|P_q|} 1 / log2(1 + r).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from common.losses.base import LossInputs
from common.ranking import SupAPStep, heaviside, pairwise_rank_sums, per_query_mean, shared_levels
from roadmap.ap_losses import RankLoss


class _SupRankLoss(RankLoss):
    """SupAP's ranks: ``step`` (H^-, :class:`common.ranking.SupAPStep`) on negatives, H on positives."""

    def __init__(self, step: SupAPStep | None = None, include_query: bool = True, chunk_size: int | None = None):
        super().__init__(include_query, chunk_size)
        self.neg_step = step if step is not None else SupAPStep()
        self.pos_step = heaviside


class SupRecall(_SupRankLoss):
    """1 - smooth recall@k averaged over ``at_k``, from SupAP ranks (TPAMI SupRecallLoss)."""

    def __init__(self, at_k: Sequence[int] = (1, 2, 4, 8, 16), temp: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not at_k or any(int(k) < 1 for k in at_k):
            raise ValueError(f"at_k must be a non-empty list of ints >= 1, got {at_k}")
        self.at_k, self.temp = tuple(int(k) for k in at_k), temp

    def compute(self, inputs: LossInputs) -> Tensor:
        r = self.ranks(inputs)
        n_pos = torch.bincount(r.q_idx, minlength=r.num_queries).to(r.rank.dtype)  # [Q]
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return inputs.zero()
        recalls = []
        for k in self.at_k:
            hits = torch.sigmoid((k - r.rank) / self.temp)  # [P]
            per_q = r.rank.new_zeros(r.num_queries).index_add(0, r.q_idx, hits)
            recalls.append(per_q / n_pos.clamp(max=k).clamp(min=1))
        recall = torch.stack(recalls).mean(0)[has_pos]
        return 1.0 - recall.mean()

    def extra_repr(self) -> str:
        return f"at_k={self.at_k}, temp={self.temp}, {self.neg_step}"


class SupNDCG(_SupRankLoss):
    """1 - NDCG from SupAP-type ranks (TPAMI SupNDCGLoss); graded relevance on ``[B, L]`` labels.

    Args:
        graded: with ``[B, L]`` labels (L > 1), use every level: relevance t = number of shared levels, gain
            2^t - 1, the upper bound H^- on every less relevant item (the original's ``hierarchy_level: MULTI``, the
            TPAMI NDCG configs). ``False``: binary relevance on column 0 (the finest level), as the original's
            ``hierarchy_level: 0``. Flat ``[B]`` labels give binary NDCG either way.
        step, include_query, chunk_size: as :class:`roadmap.ap_losses.SupAP`.
    """

    def __init__(self, graded: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.graded = bool(graded)

    def compute(self, inputs: LossInputs) -> Tensor:
        if self.graded and inputs.labels.shape[1] > 1:
            return self._graded_loss(inputs)
        return self._binary_loss(inputs)

    def _binary_loss(self, inputs: LossInputs) -> Tensor:
        r = self.ranks(inputs)
        if r.q_idx.numel() == 0:
            return inputs.zero()
        dcg_terms = 1.0 / torch.log2(1.0 + r.rank)
        dcg, n_pos = per_query_mean(dcg_terms, r.q_idx, r.num_queries)
        dcg = dcg * n_pos  # per-query sum
        # ideal DCG: positives at ranks 1..|P_q|
        max_pos = int(n_pos.max())
        ideal = 1.0 / torch.log2(1.0 + torch.arange(1, max_pos + 1, dtype=r.rank.dtype, device=r.rank.device))
        idcg = torch.cat([ideal.new_zeros(1), ideal.cumsum(0)])[n_pos.long()]
        has_pos = n_pos > 0
        return 1.0 - (dcg[has_pos] / idcg[has_pos]).mean()

    def _graded_loss(self, inputs: LossInputs) -> Tensor:
        scores = inputs.scores  # [Q, M]
        levels = shared_levels(inputs.labels, inputs.ref_labels)  # [Q, M] in 0..L
        valid = inputs.reference_mask(self.include_query)  # [Q, M]
        gains = torch.where(valid, torch.exp2(levels.to(scores.dtype)) - 1.0, scores.new_zeros(()))  # [Q, M]
        q_idx, i_idx = (valid & (levels > 0)).nonzero(as_tuple=True)  # the relevant (query, item) pairs [P]
        if q_idx.numel() == 0:
            return inputs.zero()

        def fn(diff: Tensor, qc: Tensor, ic: Tensor, not_i: Tensor) -> tuple[Tensor]:
            t_j, t_i = levels[qc], levels[qc, ic][:, None]  # [c, M], [c, 1]
            take = valid[qc] & not_i
            lower = take & (t_j < t_i)  # less relevant than i: the upper bound H^-
            zero = diff.new_zeros(())
            steps = torch.where(lower, self.neg_step(diff), zero) + torch.where(
                take & ~lower, self.pos_step(diff), zero
            )
            return (1.0 + steps.sum(1),)

        (rank,) = pairwise_rank_sums(scores, q_idx, i_idx, fn, chunk_size=self.chunk_size)  # [P]
        dcg = scores.new_zeros(scores.shape[0]).index_add(0, q_idx, gains[q_idx, i_idx] / torch.log2(1.0 + rank))
        # ideal DCG: the gains sorted in decreasing order at ranks 1..M
        discount = 1.0 / torch.log2(2.0 + torch.arange(scores.shape[1], dtype=scores.dtype, device=scores.device))
        idcg = (gains.sort(dim=1, descending=True).values * discount).sum(1)  # [Q]
        has_rel = idcg > 0
        return 1.0 - (dcg[has_rel] / idcg[has_rel]).mean()

    def extra_repr(self) -> str:
        return (
            f"graded={self.graded}, {self.neg_step}, include_query={self.include_query}, chunk_size={self.chunk_size}"
        )
