"""Rank-based AP surrogates: SupAP (ROADMAP), Smooth-AP and exact (Heaviside) AP.

For a query q with positives P_q (ROADMAP Eq. 2-4):

    rank(i)  = 1 + sum_{j != i} R(s_qj - s_qi)              rank+(i) = 1 + sum_{j in P_q, j != i} R+(s_qj - s_qi)
    AP_q     = (1 / |P_q|) sum_{i in P_q} rank+(i) / rank(i)    loss = 1 - mean_q AP_q

* SupAP: R+ = H and R = H on positives, R = H^- (:func:`common.ranking.supap_step`) on negatives.
* Smooth-AP (Brown et al. 2020, Eq. 6): R = R+ = sigma(x / tau) everywhere.
* HeavisideAP: R = R+ = H, i.e. exact AP (no gradient; for tests and monitoring).

``include_query=True`` (as the original code does) keeps the query in its own in-batch ranking as a
positive with s_qq = 1; ``False`` drops it. Queries without positives are left out of the mean; a batch with none
gives a zero loss that is still connected to the graph. Memory is O(P x M) (P = #positive pairs), or
O(chunk x M) with ``chunk_size`` (see :mod:`common.ranking`).
"""

from __future__ import annotations

from torch import Tensor

from common.losses.base import LossInputs, RetrievalLoss
from common.ranking import RankOutput, Sigmoid, StepFn, SupAPStep, ap_ranks, average_precision_from_ranks, heaviside

RETURN_TYPES = ("1-mAP", "mAP")


class RankLoss(RetrievalLoss):
    """A loss on the ranks of every (query, positive) pair: ``neg_step`` / ``pos_step`` and the chunking.

    Shared by the AP surrogates here and by the SupRank losses (:mod:`roadmap.suprank`).
    """

    neg_step: StepFn
    pos_step: StepFn

    def __init__(self, include_query: bool = True, chunk_size: int | None = None) -> None:
        super().__init__()
        self.include_query = include_query
        self.chunk_size = chunk_size

    def ranks(self, inputs: LossInputs) -> RankOutput:
        """rank and rank+ of every (query, positive) pair (:func:`common.ranking.ap_ranks`)."""
        valid = inputs.reference_mask(self.include_query)
        return ap_ranks(inputs.scores, inputs.pos, valid, self.neg_step, self.pos_step, chunk_size=self.chunk_size)


class _RankAPLoss(RankLoss):
    """Shared forward of the AP surrogates; subclasses define the step functions.

    Multi-label (boolean ``[B, C]``) labels give binary relevance: a positive shares at least one label.
    """

    supports_multilabel = True

    def __init__(self, include_query: bool = True, chunk_size: int | None = None, return_type: str = "1-mAP"):
        super().__init__(include_query, chunk_size)
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {RETURN_TYPES}, got {return_type!r}")
        self.return_type = return_type

    def compute(self, inputs: LossInputs) -> Tensor:
        ap, has_pos = average_precision_from_ranks(self.ranks(inputs))
        if not bool(has_pos.any()):
            return inputs.zero()
        map_ = ap[has_pos].mean()
        return 1.0 - map_ if self.return_type == "1-mAP" else map_


class SupAP(_RankAPLoss):
    """SupAP: exact step on positives, upper bound H^- on negatives (ROADMAP, Ramzi et al. NeurIPS 2021, Eq. 4).

    Args:
        step: the H^- step (:class:`common.ranking.SupAPStep`; default ``SupAPStep()``: the SOP/CUB paper values,
            offset 1.44, current linear branch). iNat configs: ``SupAPStep(start=0.0, offset=1.0)``; the NeurIPS
            rows: ``SupAPStep(linear_mode="x")``.
        include_query: count the query as its own positive in-batch (original behaviour).
        chunk_size: number of (query, positive) pairs per chunk; ``None`` = all at once.
    """

    def __init__(
        self,
        step: SupAPStep | None = None,
        include_query: bool = True,
        chunk_size: int | None = None,
        return_type: str = "1-mAP",
    ) -> None:
        super().__init__(include_query, chunk_size, return_type)
        self.neg_step = step if step is not None else SupAPStep()
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
