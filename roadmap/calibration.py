"""Calibration (decomposability) loss L_DG of ROADMAP (Ramzi et al. 2021, Eq. 7).

    L_calibr = mean_{nonzero} relu(alpha - s_ij) over positive pairs + mean_{nonzero} relu(s_ij - beta) over negatives

with alpha = 0.9 and beta = 0.6 and s the cosine similarity. Pairs are all ordered in-batch pairs except self-pairs,
or all (batch x memory) pairs when a reference is given. Each part is averaged over its *non-zero* terms only (the
``AvgNonZeroReducer`` of pytorch-metric-learning's ``ContrastiveLoss``, which the original code subclassed), not over
all pairs; a part with no non-zero term is 0. The loss reads the cosine matrix shared by every term of a step
(:class:`common.losses.base.LossInputs`); a test checks it against PML's ``ContrastiveLoss``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.losses.base import LossInputs, RetrievalLoss


def mean_nonzero(terms: Tensor, mask: Tensor) -> Tensor:
    """Mean of the entries of ``terms`` that are selected by ``mask`` and > 0; 0 (with graph) if there is none."""
    selected = torch.where(mask, terms, torch.zeros_like(terms))
    count = (selected > 0).sum()
    return selected.sum() / count.clamp(min=1).to(terms.dtype)


class CalibrationLoss(RetrievalLoss):
    """``relu(alpha - s)`` on positives + ``relu(s - beta)`` on negatives, each averaged over its non-zero terms.

    Multi-label (boolean ``[B, C]``) labels: a positive pair shares at least one label.
    """

    supports_multilabel = True

    def __init__(self, pos_margin: float = 0.9, neg_margin: float = 0.6) -> None:
        super().__init__()
        self.pos_margin, self.neg_margin = pos_margin, neg_margin

    def compute(self, inputs: LossInputs) -> Tensor:
        s = inputs.scores  # [Q, M]
        valid = inputs.reference_mask(include_query=False)
        pos = inputs.pos & valid
        neg = ~inputs.pos & valid
        pos_loss = mean_nonzero(torch.relu(self.pos_margin - s), pos)
        neg_loss = mean_nonzero(torch.relu(s - self.neg_margin), neg)
        return pos_loss + neg_loss

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"
