"""Sup-H-AP: the smooth upper-bound surrogate of Hierarchical Average Precision (HAPPIER, Ramzi et al. 2022).

For a query q with reference items j (the batch, or a memory), t_qj = number of shared hierarchy levels (0..L),
relevance rel_qj (``pop`` by default, see :mod:`common.metrics.relevance`) and cosine scores s_qj. Labels are
``[B, L]`` (column 0 finest) or, for HAPPIER's multi-label extension, boolean ``[B, C]`` (t = number of shared
labels, so items sharing more labels are more relevant). For every item i
with rel_qi > 0, with x = s_qj - s_qi:

    rank(i)   = 1 + sum_{j != i} R_i(j)(x),     R_i(j) = H^-  if t_qj < t_qi  (strictly lower level)
                                                        = H    otherwise     (equal or higher level)
    Hrank(i)  = rel_qi + sum_{j != i} min(rel_qi, rel_qj) * Rh_i(j)(x)
                Rh = H by default. With ``with_hrank``, for t_qj > t_qi (strictly higher level):
                Rh(x) = min(beta * x + gamma, 1) for x > 0 (H if gamma > 1),   Rh(x) = leak * x for x <= 0
    H-AP_q    = sum_{i : rel_qi > 0} Hrank(i) / rank(i)  /  sum_i rel_qi
    loss      = mean_q (1 - H-AP_q)          (queries with no relevant item are left out)

With H everywhere this is exactly H-AP (docs/methods/happier.md#formulas); with binary relevance (L = 1) it is SupAP.
H^- is SupAP's piecewise upper bound of the step (``common.ranking.supap_step``), H carries no gradient.

Self-pair. As in the original code, without a reference set the query is one of its own items (its own relevance is
the finest level's), ``include_query=True``. ``include_query=False`` removes the self-pair from the ranking and
from the relevance counts (the house contract for in-batch losses).

Inputs: fp16/bf16 embeddings (and a memory of another precision) are computed in fp32; an empty batch or one where no
query has a relevant item gives a zero that stays in the graph; an embedding of norm below 1e-6 is handled, not
refused: it is normalised to zero (cosine 0 with every item) with no gradient (``common.losses.numerics``).

Memory: never B x B x B. The (query, relevant item) pairs are processed by ``common.ranking.pairwise_rank_sums``
in chunks of ``chunk_size`` pairs under activation checkpointing: O(chunk x M) in forward and backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.losses.base import LossInputs, RetrievalLoss, fp32_region, prepare_inputs
from common.metrics.relevance import num_levels as count_levels
from common.metrics.relevance import relevance_table, shared_levels
from common.ranking import SupAPStep, heaviside, pairwise_rank_sums


def hrank_step(x: Tensor, beta: float = 25.0, gamma: float = 0.5, leak: float = 10.0) -> Tensor:
    """HAPPIER's smooth H-rank step for items of strictly higher level (``step_hrank``).

    Rh(x) = min(beta * x + gamma, 1)   x > 0     (H(x) when gamma > 1)
          = leak * x                   x <= 0    (a negative contribution: pushes higher levels up)
    """
    if gamma > 1.0:
        pos = heaviside(x)
    else:
        pos = torch.clamp(beta * x + gamma, max=1.0)
    return torch.where(x > 0, pos, leak * x)


class SupHAP(RetrievalLoss):
    """Sup-H-AP loss ``mean_q (1 - H-AP_q)``; see the module docstring for the formula.

    Args:
        step: the H^- step for items of strictly lower level (:class:`common.ranking.SupAPStep`; default
            ``SupAPStep()``: HAPPIER's SOP/DyML values tau=0.01, rho=100, delta=0.05, start=0.5, offset=1.44; iNat:
            ``SupAPStep(start=0.0, offset=1.0)``).
        with_hrank: use the smooth H-rank step on strictly higher levels (beta=25, gamma=0.5, leak=10).
        relevance: "pop" (HAPPIER's default) or "map"; alpha its parameter (a float for pop, L weights for map).
        include_query: the query counts as its own item when the batch is its own reference (original behaviour).
        exact: use H everywhere (the loss is then exactly 1 - H-AP; for tests and evaluation of the bound).
        chunk_size: (query, item) pairs per chunk; None picks ``max_chunk_elements // M`` (a single chunk, without
            activation checkpointing, when all pairs fit).
    """

    supports_multilabel = True

    def __init__(
        self,
        step: SupAPStep | None = None,
        with_hrank: bool = False,
        beta: float = 25.0,
        gamma: float = 0.5,
        leak: float = 10.0,
        relevance: str = "pop",
        alpha: float | list[float] = 1.0,
        include_query: bool = True,
        exact: bool = False,
        chunk_size: int | None = None,
        max_chunk_elements: int = 1 << 22,
    ) -> None:
        super().__init__()
        self.step = step if step is not None else SupAPStep()
        self.with_hrank, self.beta, self.gamma, self.leak = with_hrank, beta, gamma, leak
        self.relevance, self.alpha = relevance, alpha
        self.include_query, self.exact, self.chunk_size = include_query, exact, chunk_size
        self.max_chunk_elements = max_chunk_elements

    def lower_step(self, x: Tensor) -> Tensor:
        """Step for items of strictly lower level than the ranked item: H^- (or H when ``exact``)."""
        return heaviside(x) if self.exact else self.step(x)

    def higher_hrank_step(self, x: Tensor) -> Tensor:
        """H-rank step for items of strictly higher level: H, or :func:`hrank_step` with ``with_hrank``."""
        if self.with_hrank and not self.exact:
            return hrank_step(x, self.beta, self.gamma, self.leak)
        return heaviside(x)

    def per_query_hap(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Smooth H-AP of each query: ``(hap [B], has_relevant [B])``."""
        device_type = embeddings.device.type if isinstance(embeddings, Tensor) else "cpu"
        with fp32_region(device_type):
            return self.hap(prepare_inputs(embeddings, labels, ref_embeddings, ref_labels))

    def hap(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        """Smooth H-AP of each query on prepared inputs: ``(hap [Q], has_relevant [Q])``."""
        labels, ref_labels, scores = inputs.labels, inputs.ref_labels, inputs.scores  # scores [Q, M]
        num_levels = count_levels(labels)
        levels = shared_levels(labels, ref_labels)  # [Q, M] in 0..L
        valid = inputs.reference_mask(self.include_query)
        table = relevance_table(levels, num_levels, self.relevance, self.alpha, valid)  # [Q, L+1]
        rel = table.gather(1, levels).to(scores.dtype)  # [Q, M]
        items = valid & (rel > 0)
        q_idx, i_idx = items.nonzero(as_tuple=True)

        levels_small = levels.to(torch.int8) if num_levels < 127 else levels  # cheaper per-pair gathers

        def fn(diff: Tensor, qc: Tensor, ic: Tensor, not_i: Tensor) -> tuple[Tensor, Tensor]:
            t_j = levels_small[qc]  # [c, M]
            t_i = levels_small[qc, ic][:, None]  # [c, 1]
            take = valid[qc] & not_i
            lower = take & (t_j < t_i)
            rel_j = rel[qc]  # [c, M]
            rel_i = rel[qc, ic][:, None]  # [c, 1]
            min_rel = torch.minimum(rel_i, rel_j)
            zero = diff.new_zeros(())
            higher = take & (t_j > t_i) if self.with_hrank and not self.exact else None
            # Heaviside parts carry no gradient: count them without autograd
            with torch.no_grad():
                ahead = take & (diff >= 0)  # H(s_qj - s_qi) = 1, j a valid item other than i
                rank_hard = (ahead & ~lower).sum(1).to(diff.dtype)
                h_mask = ahead if higher is None else ahead & ~higher
                hrank_hard = torch.where(h_mask, min_rel, zero).sum(1)
            rank = 1.0 + rank_hard + torch.where(lower, self.lower_step(diff), zero).sum(1)
            hrank = rel_i[:, 0] + hrank_hard
            if higher is not None:
                hrank = hrank + torch.where(higher, min_rel * self.higher_hrank_step(diff), zero).sum(1)
            return rank, hrank

        chunk = self.chunk_size or max(1, self.max_chunk_elements // max(scores.shape[1], 1))
        rank, hrank = pairwise_rank_sums(scores, q_idx, i_idx, fn, chunk_size=chunk)
        num_q = scores.shape[0]
        total = scores.new_zeros(num_q).index_add(0, q_idx, hrank / rank)
        norm = torch.where(valid, rel, torch.zeros_like(rel)).sum(1)
        has_rel = norm > 0
        return total / norm.clamp(min=torch.finfo(norm.dtype).tiny), has_rel

    def compute(self, inputs: LossInputs) -> Tensor:
        """``mean_q (1 - H-AP_q)`` over the queries that have at least one relevant item (0 if none has)."""
        hap, has_rel = self.hap(inputs)
        if not has_rel.any():
            return inputs.zero()
        return (1.0 - hap[has_rel]).mean()
