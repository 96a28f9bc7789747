"""SupRank losses of the TPAMI paper (Ramzi et al. 2025): SupRecall@k and SupNDCG.

Both use SupAP's ranks of the positives: H on positives and the upper bound H^- on negatives
(:func:`common.ranking.ap_ranks`), so they are computed in O(P x M) memory like SupAP.

* SupRecall:  R@k_q ~ sum_{i in P_q} sigma((k - rank(i)) / temp) / min(|P_q|, k), averaged over k in ``at_k``
  (1, 2, 4, 8, 16), temp = 1; loss = 1 - mean_q. Unlike the original reshape, queries may have different
  numbers of positives.
* SupNDCG (binary relevance): DCG_q = sum_{i in P_q} 1 / log2(1 + rank(i)) (gain 2^1 - 1 = 1),
  IDCG_q = sum_{r=1..|P_q|} 1 / log2(1 + r); loss = 1 - mean_q DCG_q / IDCG_q.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from common.losses.base import LossInputs
from common.ranking import SupAPStep, heaviside, per_query_mean
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
    """1 - NDCG with binary relevance, DCG from SupAP ranks (TPAMI SupNDCGLoss, flat labels)."""

    def compute(self, inputs: LossInputs) -> Tensor:
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

    def extra_repr(self) -> str:
        return f"{self.neg_step}, include_query={self.include_query}, chunk_size={self.chunk_size}"
