"""Pair/triplet baselines: pytorch-metric-learning losses and miners behind the house contract
(:class:`common.losses.pml_adapter.PMLLoss`).

* :class:`TripletLoss` (Schroff et al. 2015): relu(s_an - s_ap + margin) on cosine similarities, margin 0.05
  (SupRank config), over semi-hard triplets (0 < s_ap - s_an <= margin) or all triplets; averaged over the
  non-zero terms (PML's AvgNonZeroReducer).
* :class:`MultiSimilarityLoss` (Wang et al. CVPR 2019, Eq. 3-5): pairs mined with epsilon = 0.1, then per anchor
  (1/alpha) log(1 + sum_p exp(-alpha (s_ap - base))) + (1/beta) log(1 + sum_n exp(beta (s_an - base))),
  alpha = 2, beta = 50, base = 0.5, averaged over anchors.

With a reference (memory) the pairs are (batch x memory), as PML's ``ref_emb`` does.
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity

from common.losses.pml_adapter import PMLLoss

TRIPLET_MINING = ("semihard", "hard", "easy", "all")


class TripletLoss(PMLLoss):
    """Triplet margin loss on cosine similarity with a PML ``TripletMarginMiner`` (default semi-hard)."""

    def __init__(self, margin: float = 0.05, mining: str = "semihard") -> None:
        if mining not in TRIPLET_MINING:
            raise ValueError(f"mining must be one of {TRIPLET_MINING}, got {mining!r}")
        super().__init__(
            pml_losses.TripletMarginLoss(margin=margin, distance=CosineSimilarity()),
            pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=mining, distance=CosineSimilarity()),
        )
        self.margin, self.mining = margin, mining

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"


class MultiSimilarityLoss(PMLLoss):
    """Multi-similarity loss with the MS miner (PML ``MultiSimilarityLoss`` + ``MultiSimilarityMiner``)."""

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1) -> None:
        super().__init__(
            pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base),
            pml_miners.MultiSimilarityMiner(epsilon=epsilon) if epsilon is not None else None,
        )
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}"
