"""KNN (Sun et al., ICML 2022, Eq. 2 and Alg. 1) as in HEAT's ``knn_scorer.py``.

Fit: store the L2-normalised avg-pooled training features. Score (higher = OOD): the **squared** L2 distance of the
L2-normalised test feature to its ``k``-th nearest training feature (HEAT: faiss ``IndexFlatL2``, whose distances are
squared; k = 50 for CIFAR-10, 200 for CIFAR-100, 1000 for ImageNet). ``fit_fraction`` keeps a random subset of the
training set (KNN's ImageNet protocol uses 1%; k is then scaled by the same ratio in HEAT).
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.metrics.knn import knn_search
from heat.features import Features
from heat.scorers.base import Scorer, l2_normalize


def _knn_search(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """Squared L2 distances ``[Nq, k]`` (ascending) to the k nearest rows of ``bank``, via ``common.metrics.knn``.

    ``knn_search`` ranks by cosine similarity; for unit vectors ``|q - r|^2 = 2 - 2 cos(q, r)``.
    """
    sims, _ = knn_search(queries, bank, k)
    return (2.0 - 2.0 * sims).clamp_min(0.0)


class KNN(Scorer):
    """Distance to the k-th nearest L2-normalised training feature."""

    fitted_buffers = ("bank",)

    def __init__(self, k: int = 50, pooling: str = "avg", fit_fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0 < fit_fraction <= 1:
            raise ValueError(f"fit_fraction must be in (0, 1], got {fit_fraction}")
        self.k, self.pooling, self.fit_fraction, self.seed = k, pooling, fit_fraction, seed
        self.bank = None

    @torch.no_grad()
    def fit(self, train: Features) -> KNN:
        z = train.pooled(self.pooling)
        if self.fit_fraction < 1:
            n = max(self.k, int(round(self.fit_fraction * len(z))))
            idx = torch.randperm(len(z), generator=torch.Generator().manual_seed(self.seed))[:n].sort().values
            z = z[idx]
        if len(z) < self.k:
            raise ValueError(f"KNN with k={self.k} needs at least k training features, got {len(z)}")
        self.set_buffer("bank", l2_normalize(z.float()).contiguous())
        return self

    @torch.no_grad()
    def score(self, x: Features) -> Tensor:
        self._check_fitted()
        q = l2_normalize(x.pooled(self.pooling).float()).contiguous()
        return _knn_search(q, self.bank, self.k)[:, self.k - 1]
