"""Test-set relevance tables, computed in chunks and cached under the run's cache dir.

For a test set with labels ``[N, L]`` (or flat / boolean multi-label), the table ``R [N, L+1]`` holds, for every
query q and level t, the relevance of an item sharing t levels with q (``common.metrics.relevance``; ``pop`` or
``map``). It is computed ``chunk_size`` queries at a time against all N items (memory ``O(chunk x N)``). As in
HAPPIER's cache, the per-level counts include the query itself at level L (``count_query=True``).

The file goes to ``<cache_dir>/happier/relevance/<name>_<kind>_<alpha>_<labels hash>.pt``, never into the dataset
folder (the original wrote ``HAPPIER_relevances_*.trch`` next to the images). The labels' hash is in the name, so
a changed split or relabelling can never load a stale table.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from common.metrics.relevance import num_levels, relevance_table, shared_levels

log = logging.getLogger(__name__)


def labels_digest(labels: Tensor) -> str:
    """Short sha1 of the label tensor (shape, dtype and values)."""
    t = labels.detach().cpu().contiguous()
    h = hashlib.sha1(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def compute_relevance_table(
    labels: Tensor,
    kind: str = "pop",
    alpha: float | Sequence[float] = 1.0,
    chunk_size: int = 256,
    count_query: bool = True,
    device: str | torch.device | None = None,
) -> Tensor:
    """``[N, L+1]`` float64 relevance table of every query of the test set against the whole set, in chunks."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    labels = torch.as_tensor(labels)
    n_levels = num_levels(labels)
    dev = torch.device(device) if device is not None else labels.device
    lab = labels.to(dev)
    n = lab.shape[0]
    out = torch.empty(n, n_levels + 1, dtype=torch.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        levels = shared_levels(lab[start:stop], lab)  # [c, N]
        valid = None
        if not count_query:
            valid = torch.ones_like(levels, dtype=torch.bool)
            rows = torch.arange(stop - start, device=dev)
            valid[rows, rows + start] = False
        out[start:stop] = relevance_table(levels, n_levels, kind, alpha, valid).cpu()
    return out


def _alpha_tag(alpha: float | Sequence[float]) -> str:
    if isinstance(alpha, (int, float)):
        return f"{float(alpha):g}"
    return "-".join(f"{float(a):g}" for a in alpha)


def cache_path(cache_dir: str | Path, name: str, labels: Tensor, kind: str, alpha, count_query: bool = True) -> Path:
    """Where the table of this test set lives under ``cache_dir``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    tag = "" if count_query else "_noself"
    return (
        Path(cache_dir) / "happier" / "relevance" / f"{safe}_{kind}_{_alpha_tag(alpha)}{tag}_{labels_digest(labels)}.pt"
    )


def cached_relevance_table(
    labels: Tensor,
    cache_dir: str | Path,
    name: str = "test",
    kind: str = "pop",
    alpha: float | Sequence[float] = 1.0,
    chunk_size: int = 256,
    count_query: bool = True,
    device: str | torch.device | None = None,
) -> Tensor:
    """Load the table from ``cache_dir`` or compute it (:func:`compute_relevance_table`) and save it atomically."""
    labels = torch.as_tensor(labels)
    path = cache_path(cache_dir, name, labels, kind, alpha, count_query)
    expected = (labels.shape[0], num_levels(labels) + 1)
    if path.exists():
        try:
            table = torch.load(path, map_location="cpu", weights_only=True)
            if tuple(table.shape) == expected:
                log.info("loaded relevance table %s", path)
                return table
            log.warning("cached relevance table %s has shape %s, expected %s: recomputing", path, table.shape, expected)
        except (OSError, RuntimeError, EOFError) as e:
            log.warning("cannot read cached relevance table %s (%s): recomputing", path, e)
    table = compute_relevance_table(labels, kind, alpha, chunk_size, count_query, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(table, tmp)
    os.replace(tmp, path)
    log.info("saved relevance table %s", path)
    return table
