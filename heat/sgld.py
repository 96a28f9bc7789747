"""Hybrid energy, proposals and short-run SGLD of HEAT (Lafon et al. 2023, Sec. 3; docs/methods/heat.md#formulas).

Hybrid energy: ``E(z) = E_prior(z) / T_prior + E_theta(z) / T``.

SGLD, for ``t = 0 .. K-1`` (training step 2 in docs/methods/heat.md#formulas), with the model frozen:
``z <- proj(z - eta_t grad_z E(z) - n_t)``, ``n_t ~ N(0, eps_t^2 I)``, ``proj`` = ReLU then L2 (when the prior
normalises). Step and noise follow polynomial schedules of power 2 from ``start`` to ``end = start / 10``:
``s_t = (start - end) (1 - t / K)^2 + end``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heat.scorers.base import l2_normalize


def polynomial_schedule(start: float, t: int | Tensor, total: int, end: float | None = None, power: float = 2.0):
    """``(start - end) (1 - t / total)^power + end`` with ``end = start / 10`` by default (``t = total`` gives end)."""
    if total <= 0:
        raise ValueError(f"total steps must be > 0, got {total}")
    end = start / 10.0 if end is None else end
    return (start - end) * (1.0 - t / total) ** power + end


PRIOR_GRADIENTS = ("euclidean", "tangent")


class HybridEnergy(nn.Module):
    """``E(z) = E_prior(z) / T_prior + E_theta(z) / T`` for a fitted prior scorer (with ``energy(z, y, prepared)``).

    ``z`` is always prepared (L2-normalised when the prior normalises: real features by the module, SGLD samples by
    :func:`project`). ``prior_gradient`` says how the prior sees it, which changes ``grad_z E`` but not ``E``:

    - ``"euclidean"`` (the released code, default): the prior energy of ``z`` as given, so ``grad_z E_prior`` is the
      full gradient of the Gaussian mixture in R^D, radial part included;
    - ``"tangent"``: the prior re-normalises ``z`` first, so its gradient is projected on the tangent of the unit
      sphere, ``(I - z z^T) grad`` at ``|z| = 1`` (the gradient of the energy restricted to the sphere).
    """

    def __init__(
        self,
        prior: nn.Module,
        mlp: nn.Module,
        temperature_prior: float = 1.0,
        temperature: float = 1.0,
        prior_gradient: str = "euclidean",
    ):
        super().__init__()
        if prior_gradient not in PRIOR_GRADIENTS:
            raise ValueError(f"prior_gradient must be one of {PRIOR_GRADIENTS}, got {prior_gradient!r}")
        self.prior, self.mlp = prior, mlp
        self.temperature_prior, self.temperature = temperature_prior, temperature
        self.prior_gradient = prior_gradient

    def parts(self, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(E_prior(z) / T_prior, E_theta(z) / T)``, each ``[N]``, of prepared ``z`` ``[N, D]``."""
        prepared = self.prior_gradient == "euclidean"
        prior = self.prior.energy(z, y, prepared=prepared).to(z.dtype) / self.temperature_prior
        return prior, self.mlp(z) / self.temperature

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        p, m = self.parts(z, y)
        return p + m


def project(z: Tensor, relu: bool = True, normalize: bool = False) -> Tensor:
    """HEAT's projection of samples onto the feature domain: ReLU (post-ReLU features), then L2 if the prior is."""
    if relu:
        z = torch.relu(z)
    return l2_normalize(z) if normalize else z


class Proposal:
    """Initial SGLD points ``z0`` (training step 1 in docs/methods/heat.md#formulas).

    kinds:
        - ``"random_normal"``: ``N(0, I_d)`` (EL prior);
        - ``"base_dist"``: samples of the fitted GMM prior; components drawn with ``pi_c``, or, when
          ``from_batch_labels`` (``sample_from_batch_statistics``), the batch's own labels: the same label histogram
          HEAT draws from, used as is instead of resampled;
        - ``"base_dist_temp"``: ImageNet's variant, one ``t = 100 U(0, 1)`` per batch and a per-sample std multiplier
          drawn from ``{t/100, t/10, t, 10 t, 100 t}``.
    """

    KINDS = ("random_normal", "base_dist", "base_dist_temp")

    def __init__(self, kind: str = "random_normal", from_batch_labels: bool = False) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"proposal kind must be one of {self.KINDS}, got {kind!r}")
        self.kind, self.from_batch_labels = kind, from_batch_labels

    def __call__(
        self, prior: nn.Module, n: int, dim: int, labels: Tensor | None = None, generator=None
    ) -> tuple[Tensor, Tensor | None]:
        """``(z0 [n, dim], component labels [n] or None)``."""
        if self.kind == "random_normal":
            return torch.randn(n, dim, generator=generator), None
        if not hasattr(prior, "sample"):
            raise ValueError(
                f"proposal '{self.kind}' needs a prior with .sample (GMM, GMMStd), got {type(prior).__name__}"
            )
        lab = labels if (self.from_batch_labels and labels is not None) else None
        scale = None
        if self.kind == "base_dist_temp":
            t = 100.0 * torch.rand((), generator=generator)
            mults = torch.stack([t / 100, t / 10, t, 10 * t, 100 * t])
            scale = mults[torch.randint(0, 5, (n,), generator=generator)]
        return prior.sample(n, labels=lab, scale=scale, generator=generator)


def sgld(
    energy: HybridEnergy,
    z0: Tensor,
    steps: int,
    step_size: float,
    noise: float,
    y: Tensor | None = None,
    relu: bool = True,
    normalize: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run ``steps`` SGLD steps on the **hybrid** energy from ``z0`` (already projected); returns ``z_K``.

    Parameters are frozen (only ``grad_z`` is taken) and the modules are put in eval mode for the run.
    ``y``: component labels for a class-conditional prior energy (``use_simplified_mahalanobis``).
    """
    was_training = energy.training
    energy.eval()
    z = z0.detach()
    try:
        for t in range(steps):
            eta = polynomial_schedule(step_size, t, steps)
            eps = polynomial_schedule(noise, t, steps)
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(energy(z, y).sum(), z)
            n_t = eps * torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
            z = project(z.detach() - eta * grad - n_t, relu=relu, normalize=normalize)
    finally:
        energy.train(was_training)
    return z.detach()
