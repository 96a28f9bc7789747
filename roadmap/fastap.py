"""FastAP (Cakir et al. CVPR 2019, Eq. 9-11), with a memory reference and our signature.

Distances are squared L2 between normalised embeddings, d = 2 - 2 s in [0, 4], quantised into ``num_bins``
triangular bins with centres c_k = 4 k / num_bins (k = 0..num_bins):

    h+_k = sum_{j in P_q} relu(1 - |d_qj - c_k| / Delta),   h_k = h+_k + sum_{j in N_q} (same)
    FastAP_q = (1 / |P_q|) sum_k h+_k * H+_k / H_k          (H = cumulative sums; terms with 0 products skipped)
    loss = mean over queries with positives of (1 - FastAP_q)

In-batch the self-pair is excluded (as in pytorch-metric-learning's FastAPLoss, our test oracle); with a reference
all (query, reference) pairs count. Memory: (num_bins + 1) x Q x M.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.losses.base import LossInputs, RetrievalLoss


class FastAP(RetrievalLoss):
    """FastAP with ``num_bins`` histogram bins (10 in the ROADMAP config)."""

    def __init__(self, num_bins: int = 10) -> None:
        super().__init__()
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = int(num_bins)

    def compute(self, inp: LossInputs) -> Tensor:
        valid = inp.reference_mask(include_query=False)
        pos = (inp.pos & valid).to(inp.scores.dtype)  # [Q, M]
        neg = (~inp.pos & valid).to(inp.scores.dtype)
        n_pos = pos.sum(1)
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return inp.zero()
        dist = (2.0 - 2.0 * inp.scores).clamp(min=0.0)  # [Q, M], squared L2 of unit vectors
        delta = 4.0 / self.num_bins
        centres = torch.linspace(0.0, 4.0, self.num_bins + 1, dtype=dist.dtype, device=dist.device)
        pulse = torch.relu(1.0 - (dist[None] - centres[:, None, None]).abs() / delta)  # [K+1, Q, M]
        h_pos = (pulse * pos[None]).sum(2).T  # [Q, K+1]
        h_all = h_pos + (pulse * neg[None]).sum(2).T
        cum_pos, cum_all = h_pos.cumsum(1), h_all.cumsum(1)
        prod = h_pos * cum_pos
        safe = (prod > 0) & (cum_all > 0)
        terms = torch.where(safe, prod / torch.where(safe, cum_all, torch.ones_like(cum_all)), torch.zeros_like(prod))
        fast_ap = terms.sum(1)[has_pos] / n_pos[has_pos]
        return (1.0 - fast_ap).mean()

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}"
