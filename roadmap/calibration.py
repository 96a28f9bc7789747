"""Calibration (decomposability) loss L_DG of ROADMAP (Ramzi et al. 2021, Eq. 7).

    L_calibr = mean_{nonzero} relu(alpha - s_ij) over positive pairs + mean_{nonzero} relu(s_ij - beta) over negatives

with alpha = 0.9 and beta = 0.6. Pairs are all ordered in-batch pairs except self-pairs, or all (batch x memory)
pairs when a reference is given. Each part is averaged over its *non-zero* terms only (PML's AvgNonZeroReducer),
not over all pairs. This is a thin wrapper around pytorch-metric-learning's ``ContrastiveLoss`` on dot products of
normalised embeddings, as in the original code.
"""

from __future__ import annotations

from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import ContrastiveLoss
from torch import Tensor, nn

from roadmap._inputs import fp32_forward, prepare


class CalibrationLoss(nn.Module):
    """``relu(alpha - s)`` on positives + ``relu(s - beta)`` on negatives, each averaged over its non-zero terms."""

    def __init__(self, pos_margin: float = 0.9, neg_margin: float = 0.6) -> None:
        super().__init__()
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.loss = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, distance=DotProductSimilarity())

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        inp = prepare(embeddings, labels, ref_embeddings, ref_labels)
        if inp.in_batch:
            return self.loss(inp.queries, inp.q_labels)
        return self.loss(inp.queries, inp.q_labels, ref_emb=inp.refs, ref_labels=inp.r_labels)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"
