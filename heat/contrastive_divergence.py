"""HEAT's contrastive-divergence loss (Lafon et al. 2023, Sec. 3; the released ``ContrastiveDivergenceLoss``).

With data noise ``delta ~ N(0, eps_data^2 I)`` added to real ``x`` and negatives ``z-``, and the residual energy
scaled by its temperature as in the hybrid energy, ``e(z) = E_theta(z) / T``:
``L = mean e(x + delta) - mean e(z- + delta) + lambda (mean e(x + delta)^2 + mean e(z- + delta)^2)``.
Only the residual term ``E_theta / T`` enters; the prior shapes the negatives (through SGLD) but is constant in theta.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def contrastive_divergence_loss(
    mlp: nn.Module,
    real: Tensor,
    negatives: Tensor,
    l2: float,
    eps_data: float = 1e-4,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Returns ``(loss, {"e_real", "e_neg", "cd", "reg"})`` (means of ``E_theta / T``, detached).

    ``temperature``: ``T`` of the hybrid energy; the released code divides the network's output by it in the loss too.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if real.ndim != 2 or negatives.ndim != 2 or real.shape[1] != negatives.shape[1]:
        raise ValueError(
            f"real {tuple(real.shape)} and negatives {tuple(negatives.shape)} must be [N, D] with the same D"
        )
    if eps_data > 0:
        real = real + eps_data * torch.randn(real.shape, generator=generator, dtype=real.dtype).to(real.device)
        negatives = negatives + eps_data * torch.randn(negatives.shape, generator=generator, dtype=negatives.dtype).to(
            negatives.device
        )
    e_real, e_neg = mlp(real) / temperature, mlp(negatives) / temperature
    cd = e_real.mean() - e_neg.mean()
    reg = e_real.pow(2).mean() + e_neg.pow(2).mean()
    loss = cd + l2 * reg
    logs = {"e_real": e_real.mean().detach(), "e_neg": e_neg.mean().detach(), "cd": cd.detach(), "reg": reg.detach()}
    return loss, logs
