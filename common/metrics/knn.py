"""Exact k-nearest-neighbour search by cosine similarity (inner product of L2-normalised features).

Backends: faiss ``IndexFlatIP`` (exact, BLAS-backed) on CPU; on CUDA inputs, faiss-gpu when it is installed and
``k <= 2048`` (its limit), otherwise a chunked torch ``matmul`` + ``topk`` on the GPU. Queries are processed in
chunks, so memory beyond the features is ``O(chunk x N)``.

Self-exclusion (``exclude_self=True``, queries and references are the same set, row i = row i): ``k + 1``
neighbours are searched and the item's own index is removed from its row (not "the first neighbour", which is
wrong when duplicates tie with the query); if the item is not among them, the last neighbour is dropped.
Ties are returned in the backend's order (faiss and torch may differ on exactly tied scores).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_search", "faiss_gpu_available"]

_GPU_K_LIMIT = 2048


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a device."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _check(queries: Tensor, refs: Tensor, k: int, exclude_self: bool) -> None:
    for name, x in (("queries", queries), ("refs", refs)):
        if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor [N, D]")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contain NaN or inf; check the features before searching")
    if queries.shape[1] != refs.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but refs {refs.shape[1]}")
    if exclude_self and queries.shape[0] != refs.shape[0]:
        raise ValueError("exclude_self needs queries and refs to be the same set (same number of rows)")
    available = refs.shape[0] - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(
            f"k must be in [1, {available}] (the number of references{' minus self' if exclude_self else ''}), got {k}"
        )


def _remove_self(sims: Tensor, idx: Tensor, row_ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Drop each row's own index from ``k + 1`` neighbours (or the last neighbour if it is absent)."""
    is_self = idx == row_ids[:, None]
    is_self[:, -1] |= ~is_self.any(1)  # self not found: drop the last one
    keep = ~is_self
    return sims[keep].view(-1, k), idx[keep].view(-1, k)


def _search_faiss(q: np.ndarray, r: np.ndarray, kk: int, chunk: int, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatIP(res, r.shape[1])
    else:
        index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    sims, idx = [], []
    for s in range(0, q.shape[0], chunk):
        d, i = index.search(q[s : s + chunk], kk)
        sims.append(d)
        idx.append(i)
    return np.concatenate(sims), np.concatenate(idx)


def knn_search(
    queries: Tensor,
    refs: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    device: str | torch.device | None = None,
    chunk_size: int = 8192,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` references of every query by cosine similarity.

    Returns ``(sims [Q, k] float32, idx [Q, k] int64)``, sorted by decreasing similarity, on ``device`` (default:
    the queries' device). ``backend``: ``"auto"`` (faiss on CPU, faiss-gpu or torch on CUDA), ``"faiss"`` or
    ``"torch"``.
    """
    _check(queries, refs, k, exclude_self)
    dev = torch.device(device) if device is not None else queries.device
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    kk = k + int(exclude_self)
    q = F.normalize(queries.to(dev, torch.float32), dim=1)
    r = F.normalize(refs.to(dev, torch.float32), dim=1)
    use_gpu_faiss = dev.type == "cuda" and kk <= _GPU_K_LIMIT and faiss_gpu_available()
    use_faiss = backend == "faiss" or (backend == "auto" and (dev.type == "cpu" or use_gpu_faiss))
    if use_faiss:
        s_np, i_np = _search_faiss(
            np.ascontiguousarray(q.cpu().numpy()), np.ascontiguousarray(r.cpu().numpy()), kk, chunk_size,
            gpu=use_gpu_faiss,
        )  # fmt: skip
        sims, idx = torch.from_numpy(s_np).to(dev), torch.from_numpy(i_np).long().to(dev)
    else:
        parts_s, parts_i = [], []
        for s in range(0, q.shape[0], chunk_size):
            top = torch.topk(q[s : s + chunk_size] @ r.T, kk, dim=1)
            parts_s.append(top.values)
            parts_i.append(top.indices)
        sims, idx = torch.cat(parts_s), torch.cat(parts_i)
    if exclude_self:
        sims, idx = _remove_self(sims, idx, torch.arange(q.shape[0], device=dev), k)
    return sims, idx
