"""SoftBin-AP: AP from soft histograms (Revaud et al. ICCV 2019, "Learning with Average Precision", Eq. 4-6).

Scores in [lo, hi] are quantised into ``nq`` triangular bins, bin k centred at c_k = hi - k / a with
a = (nq - 1) / (hi - lo); the first bin is flat above ``hi`` and the last one flat below ``lo`` (the original
fixed 1x1-conv quantiser). Per query, with c+_k / c_k the soft counts of positives / all items in bin k:

    P_k = sum_{k' <= k} c+_k' / sum_{k' <= k} c_k'    r_k = c+_k / sum_k c+_k    AP_q = sum_k P_k r_k

loss = 1 - mean_q AP_q over queries with positives. Memory: Q x nq x M.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.losses.base import LossInputs, RetrievalLoss


def soft_bins(scores: Tensor, nq: int, lo: float, hi: float) -> Tensor:
    """``[Q, M] -> [Q, nq, M]`` triangular bin memberships (bins ordered from ``hi`` down to ``lo``)."""
    a = (nq - 1) / (hi - lo)
    centres = hi - torch.arange(nq, dtype=scores.dtype, device=scores.device) / a  # [nq]
    x = scores[:, None, :] - centres[None, :, None]  # [Q, nq, M]
    left = 1.0 + a * x  # rising side (x <= 0)
    right = 1.0 - a * x  # falling side (x >= 0)
    right = torch.cat([torch.ones_like(right[:, :1]), right[:, 1:]], dim=1)  # bin 0 flat above hi
    left = torch.cat([left[:, :-1], torch.ones_like(left[:, -1:])], dim=1)  # last bin flat below lo
    return torch.minimum(left, right).clamp(min=0.0)


class SoftBinAP(RetrievalLoss):
    """1 - mAP from soft-binned histograms; ``nq`` = 20 bins on [-1, 1] (ROADMAP config)."""

    def __init__(self, nq: int = 20, lo: float = -1.0, hi: float = 1.0, include_query: bool = True) -> None:
        super().__init__()
        if nq < 2 or hi <= lo:
            raise ValueError(f"need nq >= 2 and hi > lo, got nq={nq}, lo={lo}, hi={hi}")
        self.nq, self.lo, self.hi, self.include_query = nq, lo, hi, include_query

    def compute(self, inp: LossInputs) -> Tensor:
        valid = inp.reference_mask(self.include_query).to(inp.scores.dtype)
        pos = inp.pos.to(inp.scores.dtype) * valid
        has_pos = pos.sum(1) > 0
        if not bool(has_pos.any()):
            return inp.zero()
        q = soft_bins(inp.scores, self.nq, self.lo, self.hi)  # [Q, nq, M]
        counts = (q * valid[:, None, :]).sum(2)  # [Q, nq]
        pos_counts = (q * pos[:, None, :]).sum(2)
        precision = pos_counts.cumsum(1) / (1e-16 + counts.cumsum(1))
        recall = pos_counts / pos_counts.sum(1, keepdim=True).clamp(min=1e-16)
        ap = (precision * recall).sum(1)
        return 1.0 - ap[has_pos].mean()

    def extra_repr(self) -> str:
        return f"nq={self.nq}, lo={self.lo}, hi={self.hi}, include_query={self.include_query}"
