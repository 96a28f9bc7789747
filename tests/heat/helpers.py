"""Small random Features for the HEAT tests."""

from __future__ import annotations

import torch

from heat.features import Features


def make_features(
    n: int = 200, d: int = 6, c: int = 3, seed: int = 0, shift: float = 0.0, labels: bool = True
) -> Features:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    centers = torch.randn(c, d, generator=g) * 2 + 3
    avg = torch.relu(centers[y] + torch.randn(n, d, generator=g) + shift)
    std = torch.rand(n, d, generator=g) + 0.1
    mx = avg + torch.rand(n, d, generator=g)
    w = torch.randn(c, d, generator=torch.Generator().manual_seed(123))
    b = torch.randn(c, generator=torch.Generator().manual_seed(124))
    return Features(
        avg=avg, std=std, max=mx, logits=avg @ w.T + b, labels=y if labels else None, fc_weight=w, fc_bias=b
    )


def tiny_heat_module(prior, d: int = 6, **kw):
    """A HEATModule with a small MLP and short SGLD, for tests (``kw`` overrides the module's arguments)."""
    from heat.mlp import EnergyMLP
    from heat.module import HEATModule

    args = dict(temperature_prior=10.0, sgld_steps=3, sgld_step_size=1e-2, sgld_noise=1e-3, l2=1.0, lr=1e-3)
    return HEATModule(prior, EnergyMLP(d, hidden=16, n_hidden=2), **{**args, **kw})


def cpu_trainer(**kw):
    """A quiet one-epoch CPU Trainer, 3 batches, no sanity validation (``kw`` overrides)."""
    import lightning as L

    args = dict(max_epochs=1, limit_train_batches=3, accelerator="cpu", logger=False, enable_progress_bar=False)
    return L.Trainer(**{**args, "num_sanity_val_steps": 0, **kw})
