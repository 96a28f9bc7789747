"""Plots for the report (matplotlib, Agg backend). Every function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def interpolated_pr_curve(
    embeddings: np.ndarray,
    labels: np.ndarray,
    points: int = 21,
    chunk: int = 1024,
    num_queries: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at ``points`` recall levels over all queries.

    Interpolated precision at recall r is the best precision at any recall >= r (the PASCAL VOC convention).
    Relevance is binary: labels ``[N]`` compare as they are, hierarchical int ``[N, L]`` by column 0 (the fine
    class), multi-label bool ``[N, C]`` by the whole set of labels (the same set; the graded metrics read the
    shared labels). With ``num_queries`` (as ``test_embeddings.npz`` stores it for query/gallery benchmarks) the first
    ``num_queries`` rows are the queries and the rest the gallery; without it every item is a query, left out of its
    own gallery. Queries without positives are skipped.
    """
    z = torch.nn.functional.normalize(torch.as_tensor(embeddings, dtype=torch.float32), dim=1)
    y = torch.as_tensor(labels)
    if y.ndim == 2 and y.dtype == torch.bool:
        y = torch.unique(y, dim=0, return_inverse=True)[1]  # [N] id of each row's label set
    elif y.ndim == 2:
        y = y[:, 0]
    n = len(z) if num_queries is None or num_queries >= len(z) else int(num_queries)
    split = n < len(z)
    queries, gallery = (z[:n], z[n:]) if split else (z, z)
    y_query, y_gallery = (y[:n], y[n:]) if split else (y, y)
    levels = torch.linspace(0, 1, points, dtype=torch.float64)
    per_query = []
    for start in range(0, len(queries), chunk):
        rows = torch.arange(start, min(start + chunk, len(queries)))
        sims = queries[rows] @ gallery.T  # [q, G]
        if split:
            order = sims.argsort(dim=1, descending=True)
        else:
            sims[torch.arange(len(rows)), rows] = -float("inf")  # the query goes last ...
            order = sims.argsort(dim=1, descending=True)[:, :-1]  # ... and is dropped
        rel = (y_gallery[order] == y_query[rows, None]).double()  # [q, G] (or [q, N-1])
        npos = rel.sum(dim=1)
        rel, npos = rel[npos > 0], npos[npos > 0]
        tp = rel.cumsum(dim=1)
        precision = tp / torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
        recall = tp / npos[:, None]
        best = precision.flip(1).cummax(dim=1).values.flip(1)  # best precision at this rank or later
        first = torch.stack([(recall >= r - 1e-12).float().argmax(dim=1) for r in levels], dim=1)  # [q, points]
        per_query.append(best.gather(1, first))
    return levels.numpy(), torch.cat(per_query).mean(dim=0).numpy()


def pr_curves_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, marker=".", label=name)
    ax.set(xlabel="recall", ylabel="interpolated precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def ood_hist_png(id_scores: np.ndarray, ood_scores: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    everything = np.concatenate([id_scores, *ood_scores.values()])
    bins = np.linspace(np.percentile(everything, 0.5), np.percentile(everything, 99.5), 50)
    ax.hist(id_scores, bins=bins, alpha=0.5, density=True, label="ID")
    for name, s in ood_scores.items():
        ax.hist(s, bins=bins, alpha=0.4, density=True, label=name, histtype="stepfilled")
    ax.set(xlabel="score (higher = more OOD)", ylabel="density", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def roc_png(id_scores: np.ndarray, ood_scores: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """ROC with OOD as the positive class (higher score = more OOD)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, s in ood_scores.items():
        y = np.r_[np.zeros(len(id_scores)), np.ones(len(s))]
        fpr, tpr, _ = roc_curve(y, np.r_[id_scores, s])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="gray")
    ax.set(xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD flagged)", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves_png(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, ylabel: str
) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
