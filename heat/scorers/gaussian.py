"""Class-conditional Gaussians with one shared covariance: HEAT's GMM / GMM-std priors, SSD+ and Mahalanobis.

Fit (heatood's ``SSDScorer``): on features ``z`` (L2-normalised when ``normalize``), class means ``mu_c``, the pooled
within-class covariance ``Sigma = 1/N sum_i (z_i - mu_{y_i})(z_i - mu_{y_i})^T + reg I`` (``np.cov(bias=True)``;
HEAT uses ``reg = 1e-12``), its Cholesky factor ``L``, and mixture weights ``pi_c = N_c / N``.

- ``mode="energy"`` (the HEAT priors GMM and GMM-std): the negative mixture log-density
  ``E(z) = -log sum_c pi_c N(z; mu_c, Sigma)``, with the log-det and 2 pi terms. With a component label ``y`` given
  (``use_simplified_mahalanobis`` for ImageNet negatives), the class-conditional ``-log N(z; mu_y, Sigma)``.
- ``mode="maha"`` (SSD+ with ``normalize=True``; Mahalanobis with ``normalize=False``): the minimum squared
  Mahalanobis distance ``min_c (z - mu_c)^T Sigma^{-1} (z - mu_c)`` (no 1/2 factor), Lee et al. 2018 Eq. 2 / SSD Eq. 3.

Fitting streams the features in chunks (float64 accumulators), so memory-mapped ImageNet features fit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from heat.features import Features
from heat.scorers.base import Scorer, chunked, l2_normalize

_CHUNK = 65536


class ClassGaussian(Scorer):
    """Shared-covariance Gaussian class model. See the module docstring for the formulas.

    Args:
        pooling: which pooled features to use ("avg" or "std"; "max" also works).
        normalize: L2-normalise features (and SGLD samples) first.
        mode: "energy" (mixture energy, HEAT prior) or "maha" (minimum squared Mahalanobis distance).
        reg: ridge added to the covariance diagonal (1e-12 in HEAT; raise it for rank-deficient features).
        max_fit_samples: fit on a random subset of this many training rows (HEAT's ``max_fit_iter`` x batch 256:
            256,000 for ImageNet; None = all rows, as HEAT does for CIFAR). ``seed`` draws the subset.
    """

    fitted_buffers = ("means", "chol", "log_weights")

    def __init__(
        self,
        pooling: str = "avg",
        normalize: bool = True,
        mode: str = "energy",
        reg: float = 1e-12,
        max_fit_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.max_fit_samples, self.seed = max_fit_samples, seed
        if mode not in ("energy", "maha"):
            raise ValueError(f"mode must be 'energy' or 'maha', got {mode!r}")
        self.pooling, self.normalize, self.mode, self.reg = pooling, normalize, mode, reg
        self.means: Tensor | None = None  # [C, D]
        self.chol: Tensor | None = None  # [D, D] lower Cholesky factor of Sigma
        self.log_weights: Tensor | None = None  # [C] log pi_c

    def prepare(self, z: Tensor) -> Tensor:
        """Features as the model sees them (float, L2-normalised when ``normalize``)."""
        z = z.float() if z.dtype not in (torch.float32, torch.float64) else z
        return l2_normalize(z) if self.normalize else z

    @torch.no_grad()
    def fit(self, train: Features) -> ClassGaussian:
        if self.max_fit_samples is not None and len(train) > self.max_fit_samples:
            g = torch.Generator().manual_seed(self.seed)
            train = train.subset(torch.randperm(len(train), generator=g)[: self.max_fit_samples].sort().values)
        z_all, y_all = train.pooled(self.pooling), train.require("labels")
        classes = torch.unique(y_all)
        if len(classes) < 1:
            raise ValueError("no labels to fit a class-conditional Gaussian")
        if int(classes.min()) < 0:
            raise ValueError("labels must be >= 0 (negative labels mark unlabelled OOD features)")
        n_cls, d = int(classes.max()) + 1, z_all.shape[1]
        sums = torch.zeros(n_cls, d, dtype=torch.float64)
        counts = torch.zeros(n_cls, dtype=torch.float64)
        for sl in chunked(len(y_all), _CHUNK):
            z = self.prepare(z_all[sl].double())
            y = y_all[sl].long()
            sums.index_add_(0, y, z)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"classes {missing[:10]} have no training sample; relabel classes as 0..C-1")
        means = sums / counts[:, None]
        scatter = torch.zeros(d, d, dtype=torch.float64)
        for sl in chunked(len(y_all), _CHUNK):
            c = self.prepare(z_all[sl].double()) - means[y_all[sl].long()]
            scatter += c.T @ c
        cov = scatter / counts.sum() + self.reg * torch.eye(d, dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise ValueError(
                f"the shared covariance ({d}x{d}) is not positive definite (rank-deficient features, e.g. dead "
                f"ReLU units, or fewer samples than dimensions); increase `reg` (now {self.reg:g})"
            )
        # float64 buffers: with HEAT's reg = 1e-12 the covariance of L2-normalised features is badly conditioned
        self.set_buffer("means", means)
        self.set_buffer("chol", chol)
        self.set_buffer("log_weights", torch.log(counts / counts.sum()))
        return self

    def mahalanobis(self, z: Tensor) -> Tensor:
        """Squared Mahalanobis distances ``[N, C]`` of prepared features ``z`` ``[N, D]`` to every class mean.

        Computed in float64 as ``|L^-1 z|^2 + |L^-1 mu_c|^2 - 2 <L^-1 z, L^-1 mu_c>`` (no ``[N, C, D]`` tensor).
        """
        self._check_fitted()
        chol = self.chol.double()
        w = torch.linalg.solve_triangular(chol, z.double().T, upper=False)  # [D, N]
        m, m_sq = self._whitened_means()
        d2 = w.pow(2).sum(0)[:, None] + m_sq[None, :] - 2.0 * (w.T @ m)
        return d2.clamp_min(0.0).to(z.dtype)

    def set_buffer(self, name: str, value: Tensor) -> None:
        self._wm_cache = None  # a refit or a checkpoint load invalidates the whitened means
        super().set_buffer(name, value)

    def _whitened_means(self) -> tuple[Tensor, Tensor]:
        """``(L^-1 mu^T [D, C], |L^-1 mu_c|^2 [C])``, cached per fitted state (SGLD calls this every step)."""
        key = (self.means.data_ptr(), self.chol.data_ptr(), self.means.device, self.means._version, self.chol._version)
        cache = getattr(self, "_wm_cache", None)
        if cache is None or cache[0] != key:
            m = torch.linalg.solve_triangular(self.chol.double(), self.means.double().T, upper=False)
            cache = (key, m, m.pow(2).sum(0))
            self._wm_cache = cache
        return cache[1], cache[2]

    def component_log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; mu_c, Sigma)`` ``[N, C]`` for prepared features."""
        d = z.shape[-1]
        logdet = 2.0 * torch.log(torch.diagonal(self.chol.double())).sum()
        return (-0.5 * (self.mahalanobis(z).double() + logdet + d * math.log(2 * math.pi))).to(z.dtype)

    def energy(self, z: Tensor, y: Tensor | None = None, prepared: bool = False) -> Tensor:
        """``-log sum_c pi_c N(z; mu_c, Sigma)``; class-conditional ``-log N(z; mu_y, Sigma)`` if ``y``.

        ``z``: raw pooled features, L2-normalised here (when ``normalize``), or, with ``prepared=True``, features used
        as given. The two give the same value on unit-norm ``z`` but not the same gradient: through the
        normalisation, ``grad_z`` is projected on the tangent of the sphere; with ``prepared=True`` it is the full
        gradient of the density in R^D, as in HEAT's SGLD (``heat.sgld.HybridEnergy``, ``prior_gradient``).
        """
        if not prepared:
            z = self.prepare(z)
        lp = self.component_log_prob(z)
        if y is not None:
            return -lp.gather(1, y.long().view(-1, 1)).squeeze(1)
        return -torch.logsumexp(lp + self.log_weights.to(lp), dim=-1)

    def score(self, x: Features) -> Tensor:
        z_all = x.pooled(self.pooling)
        out = []
        for sl in chunked(len(z_all), 4096):
            z = z_all[sl]
            if self.mode == "energy":
                out.append(self.energy(z))
            else:
                out.append(self.mahalanobis(self.prepare(z)).amin(-1))
        return torch.cat(out)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: Tensor | None = None,
        scale: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples ``mu_y + L (scale * eps)``; returns ``(z [n, D], y [n])``.

        ``labels``: component ids to use (e.g. the current batch's labels, ``sample_from_batch_statistics``);
        default: drawn with probability ``pi_c``. ``scale``: per-sample std multiplier ``[n]`` (default 1).
        """
        self._check_fitted()
        if labels is None:
            labels = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        labels = labels.to(self.means.device).long()
        eps = torch.randn(n, self.means.shape[1], generator=generator, device=self.means.device, dtype=torch.float64)
        if scale is not None:
            eps = eps * scale.to(eps).view(-1, 1)
        return (self.means[labels] + eps @ self.chol.T).float(), labels


class GMM(ClassGaussian):
    """HEAT's GMM prior: mixture energy on L2-normalised avg-pooled features."""

    def __init__(self, reg: float = 1e-12, max_fit_samples: int | None = None, seed: int = 0) -> None:
        super().__init__(
            pooling="avg", normalize=True, mode="energy", reg=reg, max_fit_samples=max_fit_samples, seed=seed
        )


class GMMStd(ClassGaussian):
    """HEAT's GMM-std ("style") prior: mixture energy on L2-normalised std-pooled features."""

    def __init__(self, reg: float = 1e-12, max_fit_samples: int | None = None, seed: int = 0) -> None:
        super().__init__(
            pooling="std", normalize=True, mode="energy", reg=reg, max_fit_samples=max_fit_samples, seed=seed
        )


class SSDPlus(ClassGaussian):
    """SSD+ (supervised SSD, Sehwag et al. 2021): min squared Mahalanobis distance on L2-normalised features."""

    def __init__(self, pooling: str = "avg", reg: float = 1e-12, max_fit_samples: int | None = None, seed: int = 0):
        super().__init__(
            pooling=pooling, normalize=True, mode="maha", reg=reg, max_fit_samples=max_fit_samples, seed=seed
        )


class Mahalanobis(ClassGaussian):
    """Mahalanobis (Lee et al. 2018, last layer only, no input preprocessing) on raw features."""

    def __init__(self, pooling: str = "avg", reg: float = 1e-12, max_fit_samples: int | None = None, seed: int = 0):
        super().__init__(
            pooling=pooling, normalize=False, mode="maha", reg=reg, max_fit_samples=max_fit_samples, seed=seed
        )
