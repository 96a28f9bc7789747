"""The one interface of the retrieval-metric engines: :class:`RetrievalProblem` in, per-query metrics out.

:func:`common.metrics.retrieval.retrieval_metrics` checks the inputs, builds a :class:`RetrievalProblem` (normalised
embeddings, labels, query and gallery indices, the metrics asked for), picks an engine and averages what the engine
yields. Every engine is a :class:`RetrievalEngine`: constructed from the problem, its :meth:`~RetrievalEngine.chunks`
yields, for consecutive chunks of the queries in query order, a dict of per-query float64 tensors (NaN for a skipped
query) under the result keys (``recall@k``, ``precision@1``, ``r_precision``, ``map@r``, ``map``, ``ndcg``, ``hap``,
``asi``) plus the bool masks ``_has_pos`` / ``_has_rel`` of the queries that count. All engines give the same
values; they differ in how they get there:

* :class:`~common.metrics.retrieval_candidates.CandidateEngine` (``"candidates"``): binary metrics on integer
  labels, any device: a low-precision candidate pass plus exact float64 rescoring, half the work when the queries
  are the gallery;
* :class:`~common.metrics.retrieval_count.CountEngine` (``"count"``): graded (and binary) metrics on CPU,
  cell-histogram counts over dense BLAS scores;
* :class:`~common.metrics.retrieval_tree.TreeEngine` (``"tree"``): graded metrics in torch, any device;
* :class:`~common.metrics.retrieval_dense.DenseEngine` (``"dense"``): any labels, multi-label included.

The last three share :class:`RowChunkEngine`'s loop (score a chunk of query rows, then finish it, split over
threads for the numpy engine).
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from common.metrics.relevance import label_kind, num_levels

__all__ = ["RetrievalProblem", "RetrievalEngine", "RowChunkEngine", "torch_threads", "worker_pool"]


@dataclass
class RetrievalProblem:
    """What every engine needs, prepared once (all tensors on the device where the work runs).

    ``emb [N, D]`` L2-normalised (float32 or float64); ``labels`` int64 ``[N]`` / ``[N, L]`` or bool ``[N, C]``;
    ``q_idx [Q]`` and ``g_idx [M]`` the dataset indices of the queries and of the gallery; ``want_binary`` /
    ``want_graded`` the metric names asked for; ``count_self`` counts the query at the finest level in the graded
    relevance (only meaningful with ``exclude_self``).
    """

    emb: Tensor
    labels: Tensor
    q_idx: Tensor
    g_idx: Tensor
    exclude_self: bool
    want_binary: tuple[str, ...]
    want_graded: tuple[str, ...]
    recall_at: tuple[int, ...]
    relevance: str = "pop"
    alpha: float | Sequence[float] = 1.0
    count_self: bool = True

    @property
    def device(self) -> torch.device:
        return self.emb.device

    @property
    def m(self) -> int:
        """Gallery size."""
        return self.g_idx.numel()

    @functools.cached_property
    def kind(self) -> str:
        return label_kind(self.labels)

    @functools.cached_property
    def n_levels(self) -> int:
        return num_levels(self.labels)

    @functools.cached_property
    def binary_labels(self) -> Tensor:
        """Labels that define a binary positive: column 0 of hierarchical labels, else the labels."""
        return self.labels[:, 0] if self.kind == "hierarchical" else self.labels

    @functools.cached_property
    def gal_pos(self) -> Tensor:
        """``[N]`` position of each dataset item in the gallery, -1 if absent (finds a query's self pair)."""
        pos = torch.full((self.emb.shape[0],), -1, dtype=torch.long, device=self.device)
        pos[self.g_idx] = torch.arange(self.m, device=self.device)
        return pos

    @functools.cached_property
    def symmetric(self) -> bool:
        """The queries are the gallery, in the same order (all-vs-all evaluation)."""
        return self.q_idx.numel() == self.g_idx.numel() and bool(torch.equal(self.q_idx, self.g_idx))

    @functools.cached_property
    def gallery(self):
        """The gallery embeddings with duplicates scored once (:class:`~common.metrics.retrieval_dense.Gallery`)."""
        from common.metrics.retrieval_dense import Gallery

        return Gallery(self.emb[self.g_idx])


class RetrievalEngine(ABC):
    """A way of computing the per-query metrics of a :class:`RetrievalProblem` (see the module docstring)."""

    name: str = ""

    def __init__(self, problem: RetrievalProblem) -> None:
        self.problem = problem

    @abstractmethod
    def chunks(self, chunk_size: int | None = None) -> Iterator[dict[str, Tensor]]:
        """Per-query metric tensors for consecutive chunks of the queries, in query order. ``chunk_size`` is the
        number of queries scored together (``None``: the engine's memory-bounded default)."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, restored after (call from the main thread only: the
    setting also reaches MKL, process-wide). Small tensor ops run faster on one thread: waking torch's pool for each
    costs more than it saves, and on a busy machine a wake-up can wait a whole scheduler tick."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


@functools.lru_cache(maxsize=4)
def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool for numpy work split by rows (numpy releases the GIL); created once per size."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retrieval")


class RowChunkEngine(RetrievalEngine):
    """Engines that score one chunk of query rows against the whole gallery at a time.

    ``produce(qi)`` does the work shared by the chunk's rows (the matmul, multi-threaded by BLAS), ``finish(qi,
    payload)`` the per-query metrics of those rows. With ``split_rows`` (numpy engines) ``finish`` runs on row slices
    in :func:`worker_pool`'s threads, so the machine stays busy between matmuls; chunks under
    :data:`SPLIT_MIN_ELEMS` scores stay in the calling thread (a thread hand-off costs more than it saves there).
    """

    split_rows = False
    elems_per_chunk = 1 << 23  # about 8M query x gallery scores per chunk
    SPLIT_MIN_ELEMS = 1 << 20

    def default_chunk(self) -> int:
        return max(1, self.elems_per_chunk // max(self.problem.m, 1))

    def produce(self, qi: Tensor):
        return None

    @abstractmethod
    def finish(self, qi: Tensor, payload) -> dict[str, Tensor]:
        """Per-query metrics of the queries ``qi`` (dataset indices) from ``payload``."""

    def chunks(self, chunk_size: int | None = None) -> Iterator[dict[str, Tensor]]:
        q_idx = self.problem.q_idx
        step = int(chunk_size or self.default_chunk())
        workers = max(1, torch.get_num_threads()) if self.split_rows else 1
        for s in range(0, q_idx.numel(), step):
            qi = q_idx[s : s + step]
            payload = self.produce(qi)
            c = qi.numel()
            if workers == 1 or c < 2 or c * self.problem.m < self.SPLIT_MIN_ELEMS:
                yield self.finish(qi, payload)
                continue
            parts = [slice(i * c // workers, (i + 1) * c // workers) for i in range(workers)]
            parts = [p for p in parts if p.stop > p.start]
            outs = list(worker_pool(workers).map(self.finish, [qi[p] for p in parts], [payload[p] for p in parts]))
            yield {key: torch.cat([o[key] for o in outs]) for key in outs[0]}
