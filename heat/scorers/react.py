"""ReAct, Rectified Activations (Sun et al., NeurIPS 2021, Eq. 1), then the energy score.

Fit: ``c`` = the ``percentile``-th percentile of all training activations (avg-pooled features; HEAT's ``use_react``
uses the 95th, the ReAct paper the 90th), estimated on at most ``max_fit_samples`` rows drawn with ``seed``.
Score (higher = OOD): ``-logsumexp(W min(z, c) + b)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from heat.features import Features
from heat.scorers.base import Scorer


class ReAct(Scorer):
    """Energy on activations clipped at a training percentile."""

    fitted_buffers = ("threshold", "fc_weight", "fc_bias")

    def __init__(self, percentile: float = 95.0, max_fit_samples: int = 50_000, seed: int = 0) -> None:
        super().__init__()
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile, self.max_fit_samples, self.seed = percentile, max_fit_samples, seed
        self.threshold = self.fc_weight = self.fc_bias = None

    @torch.no_grad()
    def fit(self, train: Features) -> ReAct:
        z = train.pooled("avg")
        if len(z) > self.max_fit_samples:
            idx = np.sort(np.random.default_rng(self.seed).choice(len(z), self.max_fit_samples, replace=False))
            z = z[torch.from_numpy(idx)]
        thr = float(np.percentile(z.float().numpy().ravel(), self.percentile))
        self.set_buffer("threshold", torch.tensor(thr))
        self.set_buffer("fc_weight", train.require("fc_weight").float().clone())
        self.set_buffer("fc_bias", train.require("fc_bias").float().clone())
        return self

    def score(self, x: Features) -> Tensor:
        self._check_fitted()
        z = x.pooled("avg").float().clamp(max=float(self.threshold))
        return -torch.logsumexp(z @ self.fc_weight.T + self.fc_bias, dim=-1)
