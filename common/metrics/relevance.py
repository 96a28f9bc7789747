"""Graded relevance between a chunk of queries and a gallery (HAPPIER, Ramzi et al. ECCV 2022).

Label types (docs/codebase.md):

* flat labels, int64 ``[N]``: treated as a hierarchy with one level (L = 1);
* hierarchical labels, int64 ``[N, L]``, column 0 the finest level. Items q and j *share level l* when columns
  ``l..L-1`` are all equal (the level and every coarser one, i.e. the same node of the implied tree). The number of
  shared levels ``t_qj`` is in 0..L; for nested labels it equals HAPPIER's target matrix ("number of levels at which
  q and j share a label");
* multi-label, boolean ``[N, C]``: ``t_qj = |A_q ∩ A_j|``, the number of labels the two items share (0..C).

Relevance tables are per query and per level, ``[Q, T+1]`` with T = L (or C), so a chunk of queries against a
gallery (evaluation) and a batch against itself or a memory (the HAPPIER loss) use the same functions:

* ``pop`` (HAPPIER's default, ``compute_relevance_on_the_fly``):
  ``w_l = (l / (L - 1))^alpha`` for l = 0..L (``L - 1`` replaced by 1 when L = 1) and
  ``rel_qj = w_{t_qj} / #{k in gallery : t_qk = t_qj}``: every level brings the same total mass ``w_l`` whatever
  its size. For SOP (L = 2) the weights are [0, 1, 2].
* ``map``: ``rel(l) = sum_{p=1..l} w_p / #{k : t_qk >= p}`` with one weight per level (``alpha`` = L weights); the
  relevance that makes H-AP a weighted sum of per-level APs.
* multi-label: the same tables on ``t = number of shared labels`` (``pop`` with L = C), documented in
  :func:`multilabel_shared`; items sharing no label have relevance 0.

Items at level 0 always get relevance 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "label_kind",
    "num_levels",
    "shared_levels",
    "multilabel_shared",
    "level_counts",
    "pop_weights",
    "pop_relevance_table",
    "map_relevance_table",
    "relevance_table",
    "relevance",
]


def label_kind(labels: Tensor) -> str:
    """``"flat"`` for int ``[N]``, ``"hierarchical"`` for int ``[N, L]``, ``"multilabel"`` for bool ``[N, C]``."""
    if labels.dtype == torch.bool:
        if labels.ndim != 2:
            raise ValueError(f"multi-label relevance needs a boolean [N, C] matrix, got shape {tuple(labels.shape)}")
        return "multilabel"
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be integer ([N] or [N, L]) or boolean ([N, C] multi-label), got dtype {labels.dtype}; "
            "cast class ids with .long()"
        )
    if labels.ndim == 1:
        return "flat"
    if labels.ndim == 2:
        return "hierarchical"
    raise ValueError(f"labels must be [N], [N, L] or boolean [N, C], got shape {tuple(labels.shape)}")


def num_levels(labels: Tensor) -> int:
    """T, the largest possible number of shared levels (L for hierarchies, 1 for flat labels, C for multi-label)."""
    return 1 if labels.ndim == 1 else int(labels.shape[1])


def shared_levels(q_labels: Tensor, g_labels: Tensor) -> Tensor:
    """``[Q, M]`` int64 number of shared levels t (0..L) between each query and each gallery item.

    Flat ``[N]`` labels give t in {0, 1}; boolean ``[N, C]`` labels are routed to :func:`multilabel_shared`.
    Memory is ``O(Q x M)`` (one level at a time, from the coarsest column down).
    """
    label_kind(q_labels), label_kind(g_labels)  # validates dtype and shape
    if q_labels.dtype == torch.bool or g_labels.dtype == torch.bool:
        return multilabel_shared(q_labels, g_labels)
    if q_labels.ndim == 1:
        q_labels = q_labels[:, None]
    if g_labels.ndim == 1:
        g_labels = g_labels[:, None]
    if q_labels.shape[1] != g_labels.shape[1]:
        raise ValueError(f"query labels have {q_labels.shape[1]} levels but gallery labels {g_labels.shape[1]}")
    n_levels = q_labels.shape[1]
    same = torch.ones(q_labels.shape[0], g_labels.shape[0], dtype=torch.bool, device=q_labels.device)
    t = torch.zeros(q_labels.shape[0], g_labels.shape[0], dtype=torch.int64, device=q_labels.device)
    for col in range(n_levels - 1, -1, -1):  # coarsest first: level l counts only if every coarser one matches
        same &= q_labels[:, col, None] == g_labels[None, :, col]
        t += same
    return t


def multilabel_shared(q_labels: Tensor, g_labels: Tensor) -> Tensor:
    """``[Q, M]`` int64 ``t_qj = |A_q ∩ A_j|`` for boolean multi-label matrices ``[Q, C]`` and ``[M, C]``.

    Used as the "level" of a multi-label pair: binary metrics treat ``t >= 1`` (at least one shared label) as
    positive, NDCG uses the gain ``2^t - 1`` and H-AP the ``pop`` relevance of :func:`pop_relevance_table` with
    L = C (each number of shared labels carries the same mass, split among its items).
    """
    if q_labels.dtype != torch.bool or g_labels.dtype != torch.bool:
        raise ValueError("multi-label relevance needs boolean [N, C] matrices for both queries and gallery")
    if q_labels.shape[1] != g_labels.shape[1]:
        raise ValueError(f"query labels have {q_labels.shape[1]} classes but gallery labels {g_labels.shape[1]}")
    # float32 matmul of 0/1 values is exact up to 2^24 classes
    return (q_labels.float() @ g_labels.float().T).round().long()


def level_counts(levels: Tensor, n_levels: int, valid: Tensor | None = None) -> Tensor:
    """``[Q, T+1]`` float64 count of gallery items of each query at exactly each level 0..T.

    ``levels [Q, M]`` int64 from :func:`shared_levels`; ``valid [Q, M]`` bool marks the items that are part of the
    query's gallery (e.g. everything but the query itself).
    """
    one = torch.ones_like(levels, dtype=torch.float64)
    if valid is not None:
        one = one * valid
    counts = torch.zeros(levels.shape[0], n_levels + 1, dtype=torch.float64, device=levels.device)
    return counts.scatter_add_(1, levels, one)


def pop_weights(n_levels: int, alpha: float = 1.0, device=None) -> Tensor:
    """``[T+1]`` HAPPIER ``pop`` level weights ``w_l = (l / (L - 1))^alpha`` (``w_0 = 0``; L - 1 -> 1 when L = 1)."""
    lv = torch.arange(n_levels + 1, dtype=torch.float64, device=device)
    w = (lv / max(n_levels - 1, 1)) ** float(alpha)
    w[0] = 0.0
    return w


def pop_relevance_table(counts: Tensor, alpha: float = 1.0) -> Tensor:
    """``[Q, T+1]`` ``pop`` relevance of an item at each level: ``w_l / count_l`` (0 where a level is empty)."""
    if not isinstance(alpha, (int, float)):
        raise ValueError(f"pop relevance takes a scalar alpha, got {alpha!r}")
    w = pop_weights(counts.shape[1] - 1, alpha, device=counts.device)
    return torch.where(counts > 0, w / counts.clamp(min=1), torch.zeros_like(counts))


def map_relevance_table(counts: Tensor, weights: Sequence[float]) -> Tensor:
    """``[Q, T+1]`` ``map`` relevance ``rel(l) = sum_{p=1..l} w_p / #{k : t_k >= p}`` (``weights``: T values)."""
    w = torch.as_tensor(list(weights), dtype=torch.float64, device=counts.device)
    if w.ndim != 1 or w.numel() != counts.shape[1] - 1:
        raise ValueError(f"map relevance needs one weight per level ({counts.shape[1] - 1}), got {w.tolist()}")
    at_least = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # [Q, T]: #{t >= p}, p = 1..T
    per_level = torch.where(at_least > 0, w / at_least.clamp(min=1), torch.zeros_like(at_least))
    return torch.cat([torch.zeros_like(counts[:, :1]), per_level.cumsum(1)], dim=1)


def relevance_table(
    levels: Tensor,
    n_levels: int,
    kind: str = "pop",
    alpha: float | Sequence[float] = 1.0,
    valid: Tensor | None = None,
    extra_counts: Tensor | None = None,
) -> Tensor:
    """``[Q, T+1]`` relevance of an item at each level for each query.

    ``extra_counts [Q, T+1]`` is added to the per-level counts before dividing; evaluation uses it to count the
    query itself at level T as HAPPIER's test-set relevance cache does, although it is not ranked.
    """
    counts = level_counts(levels, n_levels, valid)
    if extra_counts is not None:
        counts = counts + extra_counts
    if kind == "pop":
        return pop_relevance_table(counts, alpha)  # type: ignore[arg-type]
    if kind == "map":
        if isinstance(alpha, (int, float)):
            raise ValueError("map relevance takes one weight per level as alpha, e.g. alpha=[1.0, 1.0]")
        return map_relevance_table(counts, alpha)
    raise ValueError(f"unknown relevance type {kind!r}; use 'pop' or 'map'")


def relevance(
    q_labels: Tensor,
    g_labels: Tensor,
    kind: str = "pop",
    alpha: float | Sequence[float] = 1.0,
    valid: Tensor | None = None,
) -> Tensor:
    """``[Q, M]`` float64 relevance of every gallery item for every query of a chunk (labels of any kind)."""
    levels = shared_levels(q_labels, g_labels)
    table = relevance_table(levels, num_levels(q_labels), kind, alpha, valid)
    rel = table.gather(1, levels)
    return rel if valid is None else rel * valid
