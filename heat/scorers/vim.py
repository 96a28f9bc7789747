"""ViM, Virtual-logit Matching (Wang et al., CVPR 2022, Eq. 5-8), on avg-pooled features and the linear head.

Fit on training features ``z``: origin ``u = -pinv(W) b``; principal space = top-``dim`` eigenvectors of the
(uncentred) covariance of ``z - u``; residual ``r(z) = ||P_NS (z - u)||`` with ``P_NS`` the projection on the
remaining eigenvectors; ``alpha = mean_train max_c f_c(z) / mean_train r(z)``.
Score (higher = OOD): ``alpha r(z) - logsumexp_c f_c(z)``, the negated ViM score of the paper.

This follows the original ViM. HEAT's ``vim_scorer.py`` computes the logits on ``z - u``; that defect is not
reproduced because no HEAT number depends on it (item 4 of
docs/methods/heat.md#deliberate-differences-from-the-original-code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from heat.features import Features
from heat.scorers.base import Scorer, chunked


class ViM(Scorer):
    """ViM with principal dimension ``dim`` (CIFAR-10: 256, CIFAR-100: 400, ImageNet: 256 in HEAT)."""

    fitted_buffers = ("origin", "null_space", "alpha", "fc_weight", "fc_bias")

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dim = dim
        self.origin = self.null_space = self.alpha = self.fc_weight = self.fc_bias = None

    def _logits(self, z: Tensor) -> Tensor:
        return z @ self.fc_weight.to(z).T + self.fc_bias.to(z)

    @torch.no_grad()
    def fit(self, train: Features) -> ViM:
        w, b = train.require("fc_weight").double(), train.require("fc_bias").double()
        z_all = train.pooled("avg")
        d = z_all.shape[1]
        if not 0 < self.dim < d:
            raise ValueError(f"ViM principal dim must be in (0, {d}) for {d}-d features, got {self.dim}")
        u = -torch.linalg.pinv(w) @ b  # [D]
        cov = torch.zeros(d, d, dtype=torch.float64)
        for sl in chunked(len(z_all), 65536):
            c = z_all[sl].double() - u
            cov += c.T @ c
        cov /= len(z_all)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)
        ns = evecs[:, order[self.dim :]].contiguous()  # [D, D - dim]
        res_sum, maxlogit_sum = 0.0, 0.0
        for sl in chunked(len(z_all), 65536):
            z = z_all[sl].double()
            res_sum += float(((z - u) @ ns).norm(dim=-1).sum())
            maxlogit_sum += float((z @ w.T + b).amax(-1).sum())
        alpha = maxlogit_sum / res_sum
        for name, v in (
            ("origin", u),
            ("null_space", ns),
            ("alpha", torch.tensor(alpha)),
            ("fc_weight", w),
            ("fc_bias", b),
        ):
            self.set_buffer(name, v.double())
        return self

    def score(self, x: Features) -> Tensor:
        self._check_fitted()
        z = x.pooled("avg").double()
        residual = ((z - self.origin) @ self.null_space).norm(dim=-1)
        energy = torch.logsumexp(self._logits(z), dim=-1)
        return (self.alpha * residual - energy).float()
