"""SupRank losses of the TPAMI paper (Ramzi et al. 2025, specs §1.3): SupRecall@k and SupNDCG.

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
from torch import Tensor, nn

from common.ranking import SupAPStep, ap_ranks, heaviside, per_query_mean
from roadmap._inputs import fp32_forward, prepare, reference_mask, zero_loss


class _SupRankBase(nn.Module):
    def __init__(
        self,
        tau: float = 0.01,
        rho: float = 100.0,
        delta: float | None = 0.05,
        start: float = 0.5,
        offset: float | None = None,
        linear_mode: str = "x_minus_delta",
        include_query: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.neg_step = SupAPStep(tau, rho, delta, start, offset, linear_mode)
        self.include_query, self.chunk_size = include_query, chunk_size

    def _ranks(self, embeddings, labels, ref_embeddings, ref_labels):
        inp = prepare(embeddings, labels, ref_embeddings, ref_labels)
        valid = reference_mask(inp, self.include_query)
        return inp, ap_ranks(inp.scores, inp.pos, valid, self.neg_step, heaviside, chunk_size=self.chunk_size)


class SupRecall(_SupRankBase):
    """1 - smooth recall@k averaged over ``at_k``, from SupAP ranks (TPAMI SupRecallLoss)."""

    def __init__(self, at_k: Sequence[int] = (1, 2, 4, 8, 16), temp: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not at_k or any(int(k) < 1 for k in at_k):
            raise ValueError(f"at_k must be a non-empty list of ints >= 1, got {at_k}")
        self.at_k, self.temp = tuple(int(k) for k in at_k), temp

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        inp, r = self._ranks(embeddings, labels, ref_embeddings, ref_labels)
        n_pos = torch.bincount(r.q_idx, minlength=r.num_queries).to(r.rank.dtype)  # [Q]
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return zero_loss(inp)
        recalls = []
        for k in self.at_k:
            hits = torch.sigmoid((k - r.rank) / self.temp)  # [P]
            per_q = r.rank.new_zeros(r.num_queries).index_add(0, r.q_idx, hits)
            recalls.append(per_q / n_pos.clamp(max=k).clamp(min=1))
        recall = torch.stack(recalls).mean(0)[has_pos]
        return 1.0 - recall.mean()

    def extra_repr(self) -> str:
        return f"at_k={self.at_k}, temp={self.temp}, {self.neg_step}"


class SupNDCG(_SupRankBase):
    """1 - NDCG with binary relevance, DCG from SupAP ranks (TPAMI SupNDCGLoss, flat labels)."""

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        inp, r = self._ranks(embeddings, labels, ref_embeddings, ref_labels)
        if r.q_idx.numel() == 0:
            return zero_loss(inp)
        dcg_terms = 1.0 / torch.log2(1.0 + r.rank)
        dcg, n_pos = per_query_mean(dcg_terms, r.q_idx, r.num_queries)
        dcg = dcg * n_pos  # per-query sum
        # ideal DCG: positives at ranks 1..|P_q|
        max_pos = int(n_pos.max())
        ideal = 1.0 / torch.log2(1.0 + torch.arange(1, max_pos + 1, dtype=r.rank.dtype, device=r.rank.device))
        idcg = torch.cat([ideal.new_zeros(1), ideal.cumsum(0)])[n_pos.long()]
        has_pos = n_pos > 0
        return 1.0 - (dcg[has_pos] / idcg[has_pos]).mean()
