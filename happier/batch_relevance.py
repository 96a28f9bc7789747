"""Relevance of every (query, reference) pair of a batch, from the shared-level matrix.

Relevance types (spec §1.2, HAPPIER's ``compute_relevance_on_the_fly``); ``t_qj`` in 0..L is the number of shared
levels and only references with ``valid[q, j]`` count:

    pop:  w_l = (l / max(L - 1, 1)) ** alpha,   rel_qj = w_{t_qj} / #{k valid : t_qk = t_qj}
          (each level brings the same total mass w_l to a query, whatever its size)
    map:  rel_qj = sum_{p = 1..t_qj} w_p / #{k valid : t_qk >= p}      (w: L weights, one per level)

Items with t = 0 get relevance 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def level_counts(levels: Tensor, num_levels: int, valid: Tensor | None = None) -> Tensor:
    """``[Q, L+1]`` number of valid references of each query at exactly each level 0..L."""
    one = torch.ones_like(levels, dtype=torch.float64)
    if valid is not None:
        one = one * valid
    counts = torch.zeros(levels.shape[0], num_levels + 1, dtype=torch.float64, device=levels.device)
    return counts.scatter_add_(1, levels, one)


def relevance_table(
    levels: Tensor, num_levels: int, kind: str = "pop", alpha: float | Sequence[float] = 1.0, valid: Tensor | None = None
) -> Tensor:
    """``[Q, L+1]`` relevance of an item at each level 0..L for each query (float64)."""
    counts = level_counts(levels, num_levels, valid)  # [Q, L+1]
    if kind == "pop":
        if not isinstance(alpha, (int, float)):
            raise ValueError(f"pop relevance takes a scalar alpha, got {alpha!r}")
        lv = torch.arange(num_levels + 1, dtype=torch.float64, device=levels.device)
        weights = (lv / max(num_levels - 1, 1)) ** float(alpha)
        weights[0] = 0.0
        return torch.where(counts > 0, weights / counts.clamp(min=1), torch.zeros_like(counts))
    if kind == "map":
        w = torch.as_tensor(list(alpha) if isinstance(alpha, Sequence) else [alpha], dtype=torch.float64)
        if w.numel() != num_levels:
            raise ValueError(f"map relevance needs one weight per level ({num_levels}), got {w.tolist()}")
        w = w.to(levels.device)
        at_least = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # [Q, L]: #{t >= p} for p = 1..L
        per_level = torch.where(at_least > 0, w / at_least.clamp(min=1), torch.zeros_like(at_least))
        return torch.cat([torch.zeros_like(counts[:, :1]), per_level.cumsum(1)], dim=1)
    raise ValueError(f"unknown relevance type {kind!r}; use 'pop' or 'map'")


def batch_relevance(
    levels: Tensor, num_levels: int, kind: str = "pop", alpha: float | Sequence[float] = 1.0, valid: Tensor | None = None
) -> Tensor:
    """``[Q, M]`` relevance of each reference for each query (gathered from :func:`relevance_table`)."""
    table = relevance_table(levels, num_levels, kind, alpha, valid)
    return table.gather(1, levels)
