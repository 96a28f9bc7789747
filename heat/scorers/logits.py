"""Scorers on the classifier's logits: MSP, MaxLogit, Energy, and the EL prior of HEAT (docs/methods/heat.md#formulas).

All return "higher = more OOD":
- MSP (Hendrycks & Gimpel 2017): ``-max_c softmax(f(x))_c``.
- MaxLogit (Hendrycks et al. 2022): ``-max_c f_c(x)``.
- Energy (Liu et al. 2020, Eq. 1): ``E(x) = -T logsumexp_c f_c(x)/T``.
- EnergyLogits (HEAT's EL prior): the same energy with T = 1, written as a function of the avg-pooled feature
  ``E(z) = -logsumexp(W z + b)`` so that it can be evaluated (and differentiated) on SGLD samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from heat.features import Features
from heat.scorers.base import Scorer


class MSP(Scorer):
    """Maximum softmax probability, negated."""

    def score(self, x: Features) -> Tensor:
        return -torch.softmax(x.require("logits").float(), dim=-1).amax(-1)


class MaxLogit(Scorer):
    """Maximum logit, negated."""

    def score(self, x: Features) -> Tensor:
        return -x.require("logits").float().amax(-1)


class Energy(Scorer):
    """Free energy of the logits, ``-T logsumexp(f/T)`` (Liu et al. 2020, Eq. 1)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, x: Features) -> Tensor:
        t = self.temperature
        return -t * torch.logsumexp(x.require("logits").float() / t, dim=-1)


class EnergyLogits(Scorer):
    """HEAT's EL prior: ``E(z) = -logsumexp(W z + b)`` on the **un-normalised** avg-pooled feature ``z``.

    ``fit`` copies the backbone's linear head from the training Features; ``energy`` is differentiable in ``z``.
    Proposals for this prior are N(0, I) (docs/methods/heat.md#defaults), so it has no ``sample``.
    """

    fitted_buffers = ("fc_weight", "fc_bias")
    pooling = "avg"
    normalize = False

    def __init__(self) -> None:
        super().__init__()
        self.fc_weight: Tensor | None = None
        self.fc_bias: Tensor | None = None

    def fit(self, train: Features) -> EnergyLogits:
        self.set_buffer("fc_weight", train.require("fc_weight").detach().float().clone())
        self.set_buffer("fc_bias", train.require("fc_bias").detach().float().clone())
        return self

    def energy(self, z: Tensor, y: Tensor | None = None, prepared: bool = False) -> Tensor:  # noqa: ARG002
        """``-logsumexp(W z + b)`` of raw ``z`` (``y`` unused: no components; ``prepared`` changes nothing: EL never
        normalises)."""
        self._check_fitted()
        logits = z @ self.fc_weight.to(z).T + self.fc_bias.to(z)
        return -torch.logsumexp(logits, dim=-1)

    def score(self, x: Features) -> Tensor:
        return self.energy(x.pooled("avg").float())
