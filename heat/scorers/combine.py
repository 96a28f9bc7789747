"""Composition of several energies, HEAT's ``CombineScorer`` (docs/methods/heat.md#formulas).

Fit: each component's scores on ID training features give a mean ``m_i`` and std ``s_i``. HEAT uses **one** shuffled
batch of 256 training samples (``stats_batch_size=256``, the parity default); ``stats_batch_size=None`` uses all of them.
Score, with ``z_i = (E_i - m_i) / s_i``:

- ``beta = 0``: ``sum_i z_i`` (the ranking limit of the logsumexp as beta -> 0; HEAT's CLI default);
- finite ``beta != 0``: ``logsumexp_i(beta z_i) / beta`` (a soft max over energies for beta > 0, soft min for beta < 0);
- ``beta = +inf`` / ``-inf``: ``max_i z_i`` / ``min_i z_i``.

Components are fitted scorers (priors, baselines or HEAT hybrid energies); ``fit`` only computes the statistics unless
``fit_components=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from heat.features import Features
from heat.scorers.base import Scorer


def compose(zscores: Tensor, beta: float) -> Tensor:
    """Combine z-scored energies ``[N, K]`` into ``[N]`` (see the module docstring)."""
    if beta == 0:
        return zscores.sum(-1)
    if math.isinf(beta):
        return zscores.amax(-1) if beta > 0 else zscores.amin(-1)
    return torch.logsumexp(beta * zscores, dim=-1) / beta


class Combine(Scorer):
    """Sum / logsumexp / max of z-scored component scores."""

    fitted_buffers = ("means", "stds")

    def __init__(
        self,
        scorers: Sequence[nn.Module],
        beta: float = 0.0,
        stats_batch_size: int | None = 256,
        seed: int = 0,
        fit_components: bool = False,
    ) -> None:
        super().__init__()
        if len(scorers) == 0:
            raise ValueError("Combine needs at least one scorer")
        self.scorers = nn.ModuleList(scorers)
        self.beta, self.stats_batch_size, self.seed, self.fit_components = (
            float(beta),
            stats_batch_size,
            seed,
            fit_components,
        )
        self.means = self.stds = None

    def component_scores(self, x: Features) -> Tensor:
        """``[N, K]`` raw scores of the K components."""
        return torch.stack([s.score(x).float() for s in self.scorers], dim=-1)

    @torch.no_grad()
    def fit(self, train: Features) -> Combine:
        if self.fit_components:
            for s in self.scorers:
                s.fit(train)
        if self.stats_batch_size is not None and self.stats_batch_size < len(train):
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(train), generator=g)[: self.stats_batch_size]
            train = train.subset(idx)
        s = self.component_scores(train)
        std = s.std(0)
        if bool((std == 0).any()):
            raise ValueError("a component score is constant on the statistics batch; it cannot be z-scored")
        self.set_buffer("means", s.mean(0))
        self.set_buffer("stds", std)
        return self

    def zscores(self, x: Features) -> Tensor:
        self._check_fitted()
        return (self.component_scores(x) - self.means) / self.stds

    def score(self, x: Features) -> Tensor:
        return compose(self.zscores(x), self.beta)
