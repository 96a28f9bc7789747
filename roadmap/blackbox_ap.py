"""BlackBox-AP (Rolinek et al. CVPR 2020, "Optimizing rank-based metrics with blackbox differentiation").

Forward: exact AP from normalised ranks ``r(x) = rank_desc(x) / M`` (1/M = best):

    AP_q = (1/|P_q|) sum_{i in P_q} r+(i) / r(i)

where r+ ranks the positives only (negatives pushed below every positive). Scores are first perturbed by a margin,
``s - margin * |N(0, 1)| * (y - 1/2)`` (positives lowered, negatives raised). Backward of the ranker (Vlastelica
et al. 2020, Eq. 5, with lambda = 4): ``grad = -(r(x) - r(x + lambda * grad_out)) / lambda``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from common.losses.base import LossInputs, RetrievalLoss

_LOW = -1.0e4  # score given to excluded / negative items so that they rank below every cosine score


def normalised_rank(x: Tensor) -> Tensor:
    """``[Q, M] -> [Q, M]``: descending rank of each entry in its row divided by M (the highest gets 1/M)."""
    order = torch.argsort(x, dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1, stable=True).to(x.dtype) + 1.0
    return ranks / x.shape[1]


class BlackBoxRank(Function):
    """Piecewise-constant ranking with the blackbox-differentiation gradient (interpolation strength ``lam``)."""

    @staticmethod
    def forward(ctx, scores: Tensor, lam: float) -> Tensor:  # noqa: D102
        rank = normalised_rank(scores)
        ctx.lam = lam
        ctx.save_for_backward(scores, rank)
        return rank

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: D102
        scores, rank = ctx.saved_tensors
        rank_prime = normalised_rank(scores + ctx.lam * grad_output)
        return -(rank - rank_prime) / (ctx.lam + 1e-8), None


class BlackBoxAP(RetrievalLoss):
    """1 - mAP with blackbox-differentiated ranks. ``lam`` = 4, ``margin`` = 0.02 (ROADMAP config)."""

    def __init__(self, lam: float = 4.0, margin: float = 0.02, include_query: bool = True) -> None:
        super().__init__()
        self.lam, self.margin, self.include_query = lam, margin, include_query

    def compute(self, inp: LossInputs) -> Tensor:
        valid = inp.reference_mask(self.include_query)
        pos = inp.pos & valid
        n_pos = pos.sum(1)
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return inp.zero()
        scores = inp.scores
        if self.margin > 0 and self.training:
            y = pos.to(scores.dtype)
            scores = scores - self.margin * torch.randn_like(scores).abs() * (y - 0.5)
        low = torch.full_like(scores, _LOW)
        all_scores = torch.where(valid, scores, low)
        pos_scores = torch.where(pos, scores, low)
        rank_all = BlackBoxRank.apply(all_scores, self.lam)  # [Q, M]
        rank_pos = BlackBoxRank.apply(pos_scores, self.lam)
        ratio = torch.where(pos, rank_pos / rank_all, torch.zeros_like(rank_all))
        ap = ratio.sum(1)[has_pos] / n_pos[has_pos].to(ratio.dtype)
        return 1.0 - ap.mean()

    def extra_repr(self) -> str:
        return f"lam={self.lam}, margin={self.margin}, include_query={self.include_query}"
