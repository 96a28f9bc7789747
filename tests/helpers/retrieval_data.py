"""Data and comparisons shared by the retrieval-metric tests (CPU and GPU); needs only torch."""

from __future__ import annotations

import torch


def hard_set(n: int = 700, seed: int = 0, dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered float32 data with exact duplicates (across classes: exact ties), near duplicates (cosines ~1e-5
    apart, below bf16 resolution) and a few outliers (positives deep in the ranking, negative thresholds)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n // 8, (n,), generator=gen)
    centers = torch.randn(n // 8, dim, generator=gen)
    x = centers[labels] + 0.9 * torch.randn(n, dim, generator=gen)
    x = torch.nn.functional.normalize(x, dim=1)
    src, dst = torch.randint(0, n, (2, n // 8), generator=gen)
    half = n // 16
    x[dst[:half]] = x[src[:half]]
    x[dst[half:]] = x[src[half:]] + 1e-3 * torch.randn(dst.numel() - half, dim, generator=gen)
    x[torch.randperm(n, generator=gen)[:5]] = torch.randn(5, dim, generator=gen)
    return torch.nn.functional.normalize(x, dim=1), labels


def assert_same_per_query(got: dict, ref: dict, atol: float = 1e-12) -> None:
    """Every per-query value of ``got`` equals ``ref``'s (NaN where a query is skipped), on any device."""
    for key, r in ref["per_query"].items():
        torch.testing.assert_close(got["per_query"][key].cpu(), r.cpu(), atol=atol, rtol=0, equal_nan=True)
    for key in ("num_skipped_queries", "num_skipped_queries_graded"):
        assert got.get(key) == ref.get(key)
