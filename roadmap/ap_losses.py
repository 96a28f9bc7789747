"""Rank-based AP surrogates: SupAP (ROADMAP), Smooth-AP and exact (Heaviside) AP.

For a query q with positives P_q (specs/roadmap_happier.md §1.1, ROADMAP Eq. 2-4):

    rank(i)  = 1 + sum_{j != i} R(s_qj - s_qi)              rank+(i) = 1 + sum_{j in P_q, j != i} R+(s_qj - s_qi)
    AP_q     = (1 / |P_q|) sum_{i in P_q} rank+(i) / rank(i)    loss = 1 - mean_q AP_q

* SupAP: R+ = H and R = H on positives, R = H^- (:func:`common.ranking.supap_step`) on negatives.
* Smooth-AP (Brown et al. 2020, Eq. 6): R = R+ = sigma(x / tau) everywhere.
* HeavisideAP: R = R+ = H, i.e. exact AP (no gradient; for tests and monitoring).

``include_query=True`` (the original code, verified in the spec) keeps the query in its own in-batch ranking as a
positive with s_qq = 1; ``False`` drops it. Queries without positives are left out of the mean; a batch with none
gives a zero loss that is still connected to the graph. Memory is O(P x M) (P = #positive pairs), or
O(chunk x M) with ``chunk_size`` (see :mod:`common.ranking`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from common.ranking import (
    LINEAR_MODES,
    Sigmoid,
    StepFn,
    SupAPStep,
    ap_ranks,
    average_precision_from_ranks,
    heaviside,
)
from roadmap._inputs import fp32_forward, prepare, reference_mask, zero_loss

RETURN_TYPES = ("1-mAP", "mAP")


class _RankAPLoss(nn.Module):
    """Shared forward of the AP surrogates; subclasses define the step functions."""

    neg_step: StepFn
    pos_step: StepFn

    def __init__(self, include_query: bool = True, chunk_size: int | None = None, return_type: str = "1-mAP"):
        super().__init__()
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {RETURN_TYPES}, got {return_type!r}")
        self.include_query = include_query
        self.chunk_size = chunk_size
        self.return_type = return_type

    def average_precision(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-query surrogate AP ``[B]`` and a ``[B]`` bool mask of the queries that have positives."""
        inp = prepare(embeddings, labels, ref_embeddings, ref_labels)
        valid = reference_mask(inp, self.include_query)
        ranks = ap_ranks(inp.scores, inp.pos, valid, self.neg_step, self.pos_step, chunk_size=self.chunk_size)
        return average_precision_from_ranks(ranks)

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        inp = prepare(embeddings, labels, ref_embeddings, ref_labels)
        valid = reference_mask(inp, self.include_query)
        ranks = ap_ranks(inp.scores, inp.pos, valid, self.neg_step, self.pos_step, chunk_size=self.chunk_size)
        ap, has_pos = average_precision_from_ranks(ranks)
        if not bool(has_pos.any()):
            return zero_loss(inp)
        map_ = ap[has_pos].mean()
        return 1.0 - map_ if self.return_type == "1-mAP" else map_


class SupAP(_RankAPLoss):
    """SupAP: exact step on positives, upper bound H^- on negatives (ROADMAP, Ramzi et al. NeurIPS 2021, Eq. 4).

    Args:
        tau, rho, delta, start, offset: H^- parameters (:func:`common.ranking.supap_step`). Class defaults follow
            the current code (offset None = continuous); the paper configs pass ``offset=1.44`` (SOP, CUB) or
            ``offset=1.0, start=0.0`` (iNat).
        linear_mode: ``"x_minus_delta"`` = rho (x - delta) + offset (current code, Eq. 4) or ``"x"`` = rho x + offset
            (code before ROADMAP PR #13, the likely NeurIPS setting).
        include_query: count the query as its own positive in-batch (original behaviour).
        chunk_size: number of (query, positive) pairs per chunk; ``None`` = all at once.
    """

    def __init__(
        self,
        tau: float | Sequence[float] = 0.01,
        rho: float = 100.0,
        delta: float | None = 0.05,
        start: float = 0.5,
        offset: float | None = None,
        linear_mode: str = "x_minus_delta",
        include_query: bool = True,
        chunk_size: int | None = None,
        return_type: str = "1-mAP",
    ) -> None:
        super().__init__(include_query, chunk_size, return_type)
        if linear_mode not in LINEAR_MODES:
            raise ValueError(f"linear_mode must be one of {LINEAR_MODES}, got {linear_mode!r}")
        self.neg_step = SupAPStep(tau, rho, delta, start, offset, linear_mode)
        self.pos_step = heaviside

    def extra_repr(self) -> str:
        return f"{self.neg_step}, include_query={self.include_query}, chunk_size={self.chunk_size}"


class SmoothAP(_RankAPLoss):
    """Smooth-AP (Brown et al. ECCV 2020, Eq. 6): sigmoid step ``sigma(x / tau)`` for every j, tau = 0.01."""

    def __init__(
        self, tau: float = 0.01, include_query: bool = True, chunk_size: int | None = None, return_type: str = "1-mAP"
    ) -> None:
        super().__init__(include_query, chunk_size, return_type)
        self.tau = tau
        self.neg_step = self.pos_step = Sigmoid(tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, include_query={self.include_query}, chunk_size={self.chunk_size}"


class HeavisideAP(_RankAPLoss):
    """Exact AP with the Heaviside step everywhere (``1 - mAP``; carries no gradient). For tests and monitoring."""

    def __init__(self, include_query: bool = True, chunk_size: int | None = None, return_type: str = "1-mAP"):
        super().__init__(include_query, chunk_size, return_type)
        self.neg_step = self.pos_step = heaviside
