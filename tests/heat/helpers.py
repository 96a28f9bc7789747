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
