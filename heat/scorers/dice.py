"""DICE, Directed Sparsification (Sun & Li, ECCV 2022, Eq. 3-5), then the energy score.

Fit: contribution matrix ``V = W * mean_train(z)`` (``[C, D]``, each weight times the mean activation of its input);
keep the weights whose contribution is above the ``p``-th percentile of ``V`` (``mask = V > q_p``).
Score (higher = OOD): ``-logsumexp((W * mask) min(z, clip) + b)``. ``clip`` is HEAT's ``clip`` hyper-parameter, a
ReAct-style activation cap (1e5 = off in HEAT's CIFAR-10 setting).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from heat.features import Features
from heat.scorers.base import Scorer, chunked


class DICE(Scorer):
    """DICE with sparsity percentile ``p`` (HEAT: CIFAR-10 90, CIFAR-100 5, ImageNet 70)."""

    fitted_buffers = ("masked_weight", "fc_bias")

    def __init__(self, p: float = 90.0, clip: float | None = None) -> None:
        super().__init__()
        if not 0 <= p < 100:
            raise ValueError(f"DICE percentile p must be in [0, 100), got {p}")
        self.p, self.clip = p, clip
        self.masked_weight = self.fc_bias = None

    @torch.no_grad()
    def fit(self, train: Features) -> DICE:
        w, b = train.require("fc_weight").double(), train.require("fc_bias").double()
        z_all = train.pooled("avg")
        mean = torch.zeros(z_all.shape[1], dtype=torch.float64)
        for sl in chunked(len(z_all), 65536):
            z = z_all[sl].double()
            if self.clip is not None:
                z = z.clamp(max=self.clip)
            mean += z.sum(0)
        mean /= len(z_all)
        contrib = w * mean[None, :]
        thresh = float(np.percentile(contrib.numpy(), self.p))
        self.set_buffer("masked_weight", (w * (contrib > thresh)).float())
        self.set_buffer("fc_bias", b.float())
        return self

    def score(self, x: Features) -> Tensor:
        self._check_fitted()
        z = x.pooled("avg").float()
        if self.clip is not None:
            z = z.clamp(max=self.clip)
        return -torch.logsumexp(z @ self.masked_weight.T + self.fc_bias, dim=-1)
