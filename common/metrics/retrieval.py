"""Exact retrieval metrics over full rankings, chunked over queries.

:func:`evaluate_retrieval` is the house API (specs/architecture.md). Embeddings are L2-normalised and compared by
cosine similarity; every query is ranked against its whole gallery (no top-k cut), one chunk of queries at a time,
so the memory beyond the embeddings is ``O(chunk x N)`` and never ``N x N``.

Ranking and ties. Items are ordered by decreasing score. Ties are broken **pessimistically**: among items with the
same score, the less relevant ones rank first (a negative with the same score as a positive is ranked before it;
for graded metrics, a lower number of shared levels first). Items of equal relevance are interchangeable, so the
ranking, and every metric, is well defined. sklearn and PML break ties differently (sklearn's AP counts a tied
group at its last position for all of its members, PML follows faiss' order); the results agree on tie-free data.

Binary metrics (flat labels; column 0 of hierarchical labels; "shares at least one label" for boolean multi-label
matrices). For a query with R positives, let ``p_1 >= ... >= p_R`` be their scores and ``n_i`` the number of
negatives with a score ``>= p_i``; the i-th positive is at position ``pos_i = i + n_i``. Then

* ``recall@k``     = 1[pos_1 <= k]  (at least one positive in the top k; the metric-learning convention)
* ``precision@1``  = 1[pos_1 = 1]
* ``r_precision``  = #{i : pos_i <= R} / R
* ``map@r``        = (1/R) sum_{i : pos_i <= R} i / pos_i        (MAP@R, Musgrave et al. 2020, Eq. 3)
* ``map``          = (1/R) sum_i i / pos_i                        (AP over the full ranking)

each averaged over the queries that have at least one positive. Only the counts ``n_i`` are needed, not a sort.

Graded metrics use the number of shared levels ``t`` in 0..T (:mod:`common.metrics.relevance`). With ``cnt_l(k)``
the number of items at level l ranked before item k and ``rel`` the relevance table (``pop`` by default):

* ``hap``  = sum_{k : t_k > 0} Hrank(k) / pos(k) / sum_k rel(k),  ``Hrank(k) = rel(k) + sum_l min(rel(k), rel_l)
  cnt_l(k)`` (H-AP, HAPPIER Eq. 3-4, spec §1.2);
* ``ndcg`` = DCG / IDCG with gain ``2^t - 1`` and discount ``1 / log2(1 + pos)`` over the full ranking (spec §2.2);
* ``asi``  = (1/R) sum_{n=1..R} |top-n levels ∩ ideal top-n levels| / n with R = #{t > 0} (ASI, DyML; spec §2.2).
  Computed per item: with ``a_l`` gallery items at levels above l, the j-th level-l item of the ranking (at
  position ``p``) adds 1 to the intersection for every ``n >= max(p, j + a_l)``, so
  ``asi = (1/R) sum_k [H_R - H_{max(p_k, j_k + a_l) - 1}]^+`` with ``H_n`` the harmonic numbers (this equals the
  definition because ``min(#{j : p_j <= n}, n - a_l) = #{j : p_j <= n, j <= n - a_l}`` for increasing ``p_j``).

A query without a positive (binary) or without any relevant item (graded) is left out of the average; the counts
are returned as ``num_skipped_queries`` and ``num_skipped_queries_graded``.

How it is computed (all exact, no kNN cut; memory ``O(chunk x N)``). The engines are chosen automatically and can
be forced (``candidate_pass``, ``graded_engine``) for tests:

* binary metrics only, on CPU (``candidate_pass="bf16"``): a bfloat16 matmul scores every pair; a per-query bound
  on the bf16 error (:func:`bf16_score_error_bound` for the worst case, :class:`_Bf16Binary` for the per-vector
  bound actually used) selects the few gallery items that can rank above a positive within the needed depth, and
  the pairs whose order the bf16 error intervals leave open are rescored in float64. The ranking is the float64
  ranking of the normalised embeddings, ties included (proof in :class:`_Bf16Binary`; tested on near-ties, exact
  duplicates and outliers against dense float64 scoring);
* graded metrics on flat/hierarchical labels on CPU (``graded_engine="count"``): dense scores in the embeddings'
  dtype by BLAS (so the ranking is the float32 one for float32 embeddings); the relevant items of a query are read
  off the label tree, and the number of irrelevant items scoring ``>=`` each of them comes from a histogram over a
  monotone cell map of the scores, with exact comparisons only inside the cells that hold a relevant score
  (:func:`_count_cells`): ``O(N)`` per query instead of a row sort. Binary metrics are counted on the same scores;
* the same on other devices with torch (``graded_engine="tree"``: one row sort per query), and the multi-label
  case (``"generic"``: shared levels computed for every pair).

On CPU the matmul of a chunk uses every thread, then the counting of its rows is split over
``torch.get_num_threads()`` threads (numpy releases the GIL).
Duplicated gallery embeddings are scored once and expanded, so they always tie exactly (BLAS kernels may otherwise
round identical columns differently). faiss is not used: it returns a top-k list, and exact full-ranking metrics
need counts over the whole gallery; :mod:`common.metrics.knn` wraps faiss for kNN scorers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.metrics.relevance import (
    label_kind,
    map_relevance_table,
    num_levels,
    pop_relevance_table,
    relevance_table,
    shared_levels,
)

log = logging.getLogger(__name__)

__all__ = ["evaluate_retrieval", "retrieval_metrics", "METRIC_NAMES", "BINARY_METRICS", "GRADED_METRICS"]

BINARY_METRICS = ("recall", "precision_at_1", "r_precision", "map_at_r", "map")
GRADED_METRICS = ("ndcg", "hap", "asi")
METRIC_NAMES = BINARY_METRICS + GRADED_METRICS
_ELEMS_PER_CHUNK = 1 << 23  # default chunk of the torch engines: about 8M query x gallery scores
_ELEMS_BF16 = 1 << 25  # bf16 candidate pass: 32M scores (64 MB) per chunk
_ELEMS_COUNT = 1 << 25  # CPU counting engine: 32M scores (128 MB in float32) per chunk


def evaluate_retrieval(
    embeddings: Tensor,
    labels: Tensor,
    *,
    query_idx: Tensor | None = None,
    gallery_idx: Tensor | None = None,
    metrics: Sequence[str] = ("recall", "map_at_r"),
    recall_at: Sequence[int] = (1, 10, 100),
    exclude_self: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Exact retrieval metrics of ``embeddings [N, D]`` with ``labels`` ([N], [N, L] or bool [N, C]).

    ``query_idx`` / ``gallery_idx`` index the query and gallery sets (default: all items). With ``exclude_self``
    a query never retrieves the item with its own index. ``metrics`` names are those of :data:`METRIC_NAMES`; result
    keys are ``recall@{k}``, ``precision@1``, ``r_precision``, ``map@r``, ``map``, ``ndcg``, ``hap``, ``asi`` plus
    ``num_skipped_queries`` (and ``num_skipped_queries_graded`` when a graded metric is asked for). Graded metrics
    use HAPPIER's ``pop`` relevance with alpha = 1; :func:`retrieval_metrics` exposes the relevance options.
    ``device`` is where the work runs (default: the embeddings' device). See the module docstring for formulas
    and the pessimistic tie rule.
    """
    return retrieval_metrics(
        embeddings,
        labels,
        query_idx=query_idx,
        gallery_idx=gallery_idx,
        metrics=metrics,
        recall_at=recall_at,
        exclude_self=exclude_self,
        chunk_size=chunk_size,
        device=device,
    )


@dataclass
class _Acc:
    """Running sums over queries (float64)."""

    sums: dict[str, float] = field(default_factory=dict)
    n_binary: int = 0
    n_graded: int = 0
    skipped: int = 0
    skipped_graded: int = 0

    def add(self, key: str, values: Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(values.double().sum())


def _check_inputs(embeddings: Tensor, labels: Tensor, metrics: Sequence[str], recall_at: Sequence[int]) -> None:
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ValueError("embeddings must be a floating-point tensor [N, D]")
    if not isinstance(labels, Tensor):
        raise ValueError("labels must be a tensor: int64 [N] or [N, L], or bool [N, C]")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels have {labels.shape[0]} rows but embeddings {embeddings.shape[0]}; pass one label per item"
        )
    label_kind(labels)
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or inf; check the model output (e.g. fp16 overflow) before evaluating")
    if (embeddings.norm(dim=1) == 0).any():
        raise ValueError("an embedding is all zeros and has no direction; cosine similarity is undefined for it")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
    if "recall" in metrics and (len(recall_at) == 0 or any(int(k) < 1 for k in recall_at)):
        raise ValueError(f"recall_at must be positive integers, got {list(recall_at)}")


def _as_index(idx: Tensor | Sequence[int] | None, n: int, name: str, device: torch.device) -> Tensor:
    if idx is None:
        return torch.arange(n, device=device)
    idx = torch.as_tensor(idx, device=device).long().flatten()
    if idx.numel() == 0:
        raise ValueError(f"{name} is empty")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{name} must index the {n} embeddings, got values in [{int(idx.min())}, {int(idx.max())}]")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"{name} contains duplicate indices")
    return idx


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    *,
    query_idx: Tensor | None = None,
    gallery_idx: Tensor | None = None,
    metrics: Sequence[str] = ("recall", "map_at_r"),
    recall_at: Sequence[int] = (1, 10, 100),
    exclude_self: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    relevance: str = "pop",
    alpha: float | Sequence[float] = 1.0,
    count_self_in_relevance: bool = True,
    per_query: bool = False,
    candidate_pass: str = "auto",
    graded_engine: str = "auto",
) -> dict:
    """:func:`evaluate_retrieval` with the relevance options exposed.

    ``relevance``/``alpha``: ``"pop"`` with a scalar alpha or ``"map"`` with one weight per level (see
    :mod:`common.metrics.relevance`). ``count_self_in_relevance``: when a query is excluded from its own gallery,
    still count it at the finest level in the relevance denominators, as HAPPIER's evaluation does (spec §1.2);
    set False to count only the gallery actually ranked. ``per_query=True`` adds ``per_query`` (a dict of float64
    tensors with NaN for skipped queries), for tests and analyses.

    ``candidate_pass`` (binary metrics without graded ones): ``"bf16"`` (CPU only) scores in bfloat16 and rescores
    exactly (float64) every item that could rank above a positive (:class:`_Bf16Binary`; the result is the float64
    ranking, proven by the error bound and tested); ``"off"`` scores densely in the embeddings' dtype; ``"auto"``
    uses bf16 on CPU for integer labels and galleries of 4096 items or more.
    ``graded_engine`` (when a graded metric is asked for): ``"count"`` (CPU, flat or hierarchical labels: dense BLAS
    scores, relevant items from the label tree, cell-histogram counts; binary metrics from the same scores),
    ``"tree"`` (torch, any device: one row sort per query), ``"generic"`` (any labels, multi-label included; shared
    levels computed for every pair) or ``"auto"`` (count on CPU, tree elsewhere, generic for multi-label). All give
    the same values.
    """
    metrics = tuple(dict.fromkeys(metrics))
    _check_inputs(embeddings, labels, metrics, recall_at)
    dev = torch.device(device) if device is not None else embeddings.device
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    n = embeddings.shape[0]
    emb = F.normalize(embeddings.to(dev, dtype), dim=1)
    labels = labels.to(dev)
    kind = label_kind(labels)
    q_idx = _as_index(query_idx, n, "query_idx", dev)
    g_idx = _as_index(gallery_idx, n, "gallery_idx", dev)
    gal = emb[g_idx]  # [M, D]
    m = gal.shape[0]
    gallery = _Gallery(gal)
    # position of each dataset item in the gallery (-1 if absent): finds the self pair of a query
    gal_pos = torch.full((n,), -1, dtype=torch.long, device=dev)
    gal_pos[g_idx] = torch.arange(m, device=dev)
    binary_labels = labels[:, 0] if kind == "hierarchical" else labels
    want_binary = [x for x in metrics if x in BINARY_METRICS]
    want_graded = [x for x in metrics if x in GRADED_METRICS]
    if relevance not in ("pop", "map"):
        raise ValueError(f"unknown relevance type {relevance!r}; use 'pop' or 'map'")
    if relevance == "map" and isinstance(alpha, (int, float)):
        raise ValueError("map relevance takes one weight per level as alpha, e.g. alpha=[1.0, 1.0]")

    if candidate_pass not in ("auto", "bf16", "off"):
        raise ValueError(f"candidate_pass must be 'auto', 'bf16' or 'off', got {candidate_pass!r}")
    if candidate_pass == "bf16" and dev.type != "cpu":
        raise ValueError("the bf16 candidate pass runs on CPU; use candidate_pass='off' on other devices")
    if graded_engine not in ("auto", "count", "tree", "generic"):
        raise ValueError(f"graded_engine must be 'auto', 'count', 'tree' or 'generic', got {graded_engine!r}")
    if graded_engine in ("count", "tree") and kind == "multilabel":
        raise ValueError(f"the {graded_engine} engine needs flat or hierarchical integer labels; use 'generic'")
    if graded_engine == "count" and dev.type != "cpu":
        raise ValueError("the count engine runs on CPU; use graded_engine='tree' on other devices")
    if graded_engine == "count" and num_levels(labels) > _MAX_LEVELS:
        raise ValueError(f"the count engine handles up to {_MAX_LEVELS} levels; use graded_engine='tree'")

    engine = "dense"
    if want_graded and kind != "multilabel" and graded_engine != "generic":
        auto_count = dev.type == "cpu" and num_levels(labels) <= _MAX_LEVELS
        engine = "count" if graded_engine == "count" or (graded_engine == "auto" and auto_count) else "tree"
    elif not want_graded and want_binary and kind != "multilabel":
        if candidate_pass == "bf16" or (candidate_pass == "auto" and dev.type == "cpu" and m >= 4096):
            engine = "bf16"

    if chunk_size is None:
        budget = {"bf16": _ELEMS_BF16, "count": _ELEMS_COUNT // (emb.element_size() // 4)}.get(engine, _ELEMS_PER_CHUNK)
        chunk_size = max(1, budget // (m * (4 if engine in ("tree", "dense") and want_graded else 1)))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    rel_opts = (relevance, alpha, exclude_self and count_self_in_relevance)
    if engine == "bf16":
        job = _Bf16Binary(emb, binary_labels, g_idx, gal_pos, gallery, exclude_self, want_binary, recall_at)
    elif engine == "count":
        job = _CountEngine(
            emb, labels, g_idx, gal_pos, gallery, exclude_self, want_binary, want_graded, recall_at, rel_opts
        )
    elif engine == "tree":
        job = _TreeJob(
            emb, labels, g_idx, gal_pos, gallery, exclude_self, want_binary, want_graded, recall_at, rel_opts
        )
    else:
        job = _DenseJob(
            emb, labels, g_idx, gal_pos, gallery, exclude_self, want_binary, want_graded, recall_at, rel_opts
        )

    acc = _Acc()
    per_q: dict[str, list[Tensor]] = {}
    for out in _chunk_outputs(q_idx, chunk_size, job):
        _accumulate(acc, out)
        if per_query:
            for key, v in out.items():
                per_q.setdefault(key, []).append(v)

    result: dict = {}
    for key, total in acc.sums.items():
        denom = acc.n_graded if key in GRADED_METRICS else acc.n_binary
        result[key] = total / denom if denom > 0 else float("nan")
    if want_binary:
        result["num_skipped_queries"] = acc.skipped
        if acc.skipped:
            log.info("retrieval metrics: %d queries without a positive were left out", acc.skipped)
    if want_graded:
        result["num_skipped_queries_graded"] = acc.skipped_graded
        if acc.skipped_graded:
            log.info("graded retrieval metrics: %d queries without a relevant item were left out", acc.skipped_graded)
    ordered = {k: result[k] for k in _result_keys(metrics, recall_at) if k in result}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    if per_query:
        ordered["per_query"] = {k: torch.cat(v) for k, v in per_q.items() if not k.startswith("_")}
    return ordered


def _chunk_outputs(q_idx: Tensor, chunk_size: int, job) -> Iterator[dict[str, Tensor]]:
    """Per-chunk outputs in query order: ``job.produce(qi)`` (the matmul, itself multi-threaded), then
    ``job.finish(qi, payload)``. For the numpy engines (``job.split_rows``) the finishing work is split by rows over
    ``torch.get_num_threads()`` threads (numpy releases the GIL), so the machine stays busy between matmuls."""
    workers = max(1, torch.get_num_threads()) if job.split_rows else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retrieval") as pool:
        for s in range(0, q_idx.numel(), chunk_size):
            qi = q_idx[s : s + chunk_size]
            payload = job.produce(qi)
            c = qi.numel()
            parts = [slice(i * c // workers, (i + 1) * c // workers) for i in range(workers)]
            parts = [p for p in parts if p.stop > p.start]
            if len(parts) == 1:
                yield job.finish(qi, payload)
                continue
            outs = list(pool.map(job.finish, [qi[p] for p in parts], [payload[p] for p in parts]))
            yield {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


class _TorchJob:
    """Engines written in torch (any device), one chunk at a time in the caller's thread."""

    split_rows = False

    def __init__(self, emb, labels, g_idx, gal_pos, gallery, exclude_self, want_binary, want_graded, recall_at, rel):
        self.emb, self.labels, self.g_idx, self.gal_pos, self.gallery = emb, labels, g_idx, gal_pos, gallery
        self.exclude_self, self.want_binary, self.want_graded, self.recall_at = (
            exclude_self,
            want_binary,
            want_graded,
            recall_at,
        )
        self.relevance, self.alpha, self.count_self = rel
        self.kind = label_kind(labels)
        self.n_lv = num_levels(labels)
        self.binary_labels = labels[:, 0] if self.kind == "hierarchical" else labels

    def produce(self, qi: Tensor) -> None:
        return None

    def _self_pos(self, qi: Tensor) -> Tensor:
        return self.gal_pos[qi] if self.exclude_self else torch.full_like(qi, -1)


class _DenseJob(_TorchJob):
    """Dense scores in the embeddings' dtype; binary metrics by counting, graded ones with shared levels computed
    for every pair (any label kind, multi-label included)."""

    def finish(self, qi: Tensor, payload: None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        scores, valid = _dense_scores(self.emb[qi], self.gallery, self.gal_pos[qi] if self.exclude_self else None)
        if self.want_binary:
            pos = _binary_positive(self.binary_labels[qi], self.binary_labels[self.g_idx], self.kind) & valid
            out.update(_binary_metrics_from_scores(scores, pos, self.want_binary, self.recall_at))
        if self.want_graded:
            c, n_lv = qi.numel(), self.n_lv
            levels = shared_levels(self.labels[qi], self.labels[self.g_idx]).masked_fill(~valid, 0)  # [C, M]
            extra = None
            if self.count_self and self.kind != "multilabel":
                extra = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=qi.device)
                extra[:, n_lv] = (self.gal_pos[qi] >= 0).double()  # the query itself, at the finest level
            table = relevance_table(levels, n_lv, self.relevance, self.alpha, valid, extra)  # [C, T+1]
            out.update(_graded_metrics(scores, levels, valid, table, n_lv, self.want_graded))
        return out


class _TreeJob(_TorchJob):
    """Flat or hierarchical labels in torch (any device): one row sort per query, see :class:`_TreeRanker`."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.tree = _TreeRanker(self.labels, self.g_idx, self.gal_pos)

    def finish(self, qi: Tensor, payload: None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        self_pos = self._self_pos(qi)
        scores, _ = _dense_scores(self.emb[qi], self.gallery, self_pos)
        srt = _sort_rows(scores)
        if self.want_binary:
            out.update(self.tree.binary(scores, srt, qi, self_pos, self.want_binary, self.recall_at))
        rel = (self.relevance, self.alpha, self.count_self)
        out.update(self.tree.graded(scores, srt, qi, self_pos, *rel, self.want_graded))
        return out


class _Gallery:
    """Gallery embeddings with their distinct rows: scores are computed against distinct vectors and expanded, so
    duplicated embeddings always get bit-identical scores (BLAS kernels may round identical columns differently
    depending on their position, which would silently break exact ties)."""

    def __init__(self, gal: Tensor) -> None:
        self.gal = gal
        uniq, inv = torch.unique(gal, dim=0, return_inverse=True)
        self.uniq, self.inv = (uniq, inv) if uniq.shape[0] < gal.shape[0] else (gal, None)

    def scores(self, q: Tensor) -> Tensor:
        s = q.to(self.uniq.dtype) @ self.uniq.T
        return s if self.inv is None else s[:, self.inv]


class _Gallery64(_Gallery):
    """The same distinct gallery vectors in float64 (the exact fallback of the bf16 pass)."""

    def __init__(self, base: _Gallery) -> None:
        self.gal, self.uniq, self.inv = base.gal, base.uniq.double(), base.inv


def _dense_scores(q: Tensor, gal: _Gallery, self_pos: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(scores [C, M], valid [C, M])``: cosine scores with the query's own gallery entry set to -inf."""
    scores = gal.scores(q)
    valid = torch.ones_like(scores, dtype=torch.bool)
    if self_pos is not None:
        has_self = self_pos >= 0
        rows = torch.arange(q.shape[0], device=q.device)[has_self]
        valid[rows, self_pos[has_self]] = False
    return scores.masked_fill(~valid, -math.inf), valid


def _result_keys(metrics: Sequence[str], recall_at: Sequence[int]) -> list[str]:
    names = {"precision_at_1": "precision@1", "r_precision": "r_precision", "map_at_r": "map@r", "map": "map"}
    keys: list[str] = []
    for x in metrics:
        if x == "recall":
            keys += [f"recall@{int(k)}" for k in recall_at]
        else:
            keys.append(names.get(x, x))
    return keys


def _accumulate(acc: _Acc, out: dict[str, Tensor]) -> None:
    if "_has_pos" in out:
        has = out["_has_pos"]
        acc.n_binary += int(has.sum())
        acc.skipped += int((~has).sum())
    if "_has_rel" in out:
        has = out["_has_rel"]
        acc.n_graded += int(has.sum())
        acc.skipped_graded += int((~has).sum())
    for key, v in out.items():
        if not key.startswith("_"):
            acc.add(key, torch.nan_to_num(v, nan=0.0))


def _binary_positive(q_lab: Tensor, g_lab: Tensor, kind: str) -> Tensor:
    """``[C, M]`` bool: same class (flat / column 0) or at least one shared label (multi-label)."""
    if kind == "multilabel":
        return (q_lab.float() @ g_lab.float().T) > 0.5
    return q_lab[:, None] == g_lab[None, :]


def _count_at_or_above(scores: Tensor, exclude: Tensor, thresholds: Tensor) -> Tensor:
    """``[C, P]``: for each row, the number of entries of ``scores [C, M]`` not in ``exclude [C, M]`` that are
    ``>=`` each threshold ``[C, P]`` (-inf thresholds are padding and get meaningless counts).

    Only entries at or above the row's lowest finite threshold can count: they are gathered (usually a few per row)
    and compared with the thresholds. When there are many (poor embeddings), rows are sorted instead.
    """
    c, m = scores.shape
    finite = torch.isfinite(thresholds)
    lowest = torch.where(finite, thresholds, math.inf).min(1).values  # [C]
    cand = (scores >= lowest[:, None]) & ~exclude
    n_cand = int(cand.sum())
    if n_cand > c * m // 8:
        srt = _sort_rows(scores.masked_fill(exclude, -math.inf))
        return m - torch.searchsorted(srt, thresholds.contiguous(), side="left")
    rows, cols = cand.nonzero(as_tuple=True)
    counts = torch.zeros(c, thresholds.shape[1], dtype=torch.long, device=scores.device)
    counts.index_add_(0, rows, (scores[rows, cols][:, None] >= thresholds[rows]).long())
    return counts


def _sort_rows(x: Tensor) -> Tensor:
    """Ascending sort of each row (numpy's vectorised sort on CPU, torch elsewhere)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _binary_metrics_from_scores(
    scores: Tensor, pos: Tensor, wanted: Sequence[str], recall_at: Sequence[int]
) -> dict[str, Tensor]:
    """Per-query binary metrics (NaN where a query has no positive) from scores ``[C, M]`` (-inf = not in gallery)."""
    npos = pos.sum(1)  # [C]
    p_max = max(int(npos.max()), 1)
    pos_scores = torch.topk(scores.masked_fill(~pos, -math.inf), p_max, dim=1).values  # [C, P], descending
    n_neg = _count_at_or_above(scores, pos | ~torch.isfinite(scores), pos_scores)  # [C, P]
    return _binary_metrics(npos, n_neg, wanted, recall_at)


def _binary_metrics(npos: Tensor, n_neg: Tensor, wanted: Sequence[str], recall_at: Sequence[int]) -> dict[str, Tensor]:
    """Per-query binary metrics from the number of positives ``npos [C]`` and, for the i-th best positive, the
    number of negatives scoring at least as high, ``n_neg [C, P]`` (columns beyond ``npos`` are ignored)."""
    has_pos = npos > 0
    p_max = n_neg.shape[1]
    i = torch.arange(1, p_max + 1, device=n_neg.device, dtype=torch.float64)  # 1-based positive index
    is_real = i[None, :] <= npos[:, None]  # [C, P]
    position = i[None, :] + n_neg.double()  # pessimistic position of the i-th positive
    r = npos.double().clamp(min=1)[:, None]
    nan = torch.full_like(r[:, 0], math.nan)
    out: dict[str, Tensor] = {"_has_pos": has_pos}
    for name in wanted:
        if name == "recall":
            for k in recall_at:
                out[f"recall@{int(k)}"] = torch.where(has_pos, (position[:, 0] <= int(k)).double(), nan)
        elif name == "precision_at_1":
            out["precision@1"] = torch.where(has_pos, (position[:, 0] == 1).double(), nan)
        elif name == "r_precision":
            hit = is_real & (position <= r)
            out["r_precision"] = torch.where(has_pos, hit.sum(1).double() / r[:, 0], nan)
        elif name == "map_at_r":
            hit = is_real & (position <= r)
            out["map@r"] = torch.where(has_pos, torch.where(hit, i / position, 0.0).sum(1) / r[:, 0], nan)
        elif name == "map":
            out["map"] = torch.where(has_pos, torch.where(is_real, i / position, 0.0).sum(1) / r[:, 0], nan)
    return out


_BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest)
_FP32_U = 2.0**-24
_BF16_NEG_INF = np.int16(-128)  # bit pattern 0xFF80 of -inf in bfloat16, as int16


def bf16_score_error_bound(dim: int) -> float:
    """Bound on ``|s_bf16 - s|`` for the cosine of two unit vectors of dimension ``dim`` scored by a bf16 matmul.

    Rounding both inputs to bf16 moves each product by at most ``(2u + u^2)|x_i y_i|`` and ``sum |x_i y_i| <= 1``
    (Cauchy-Schwarz); fp32 accumulation adds at most ``gamma_d = d u32 / (1 - d u32)`` times ``sum |x^_i y^_i|``
    (recursive-summation worst case, any order); rounding the output to bf16 adds ``u |s^|``. A 1e-5 slack covers
    fp32 normalisation (norms 1 +- 1e-6) and flushed subnormals. This is the worst case over all vectors; the
    candidate pass uses the tighter per-vector bound of :class:`_Bf16Binary`.
    """
    u = _BF16_U
    gamma = dim * _FP32_U / (1.0 - dim * _FP32_U)
    inputs = 2.0 * u + u * u
    acc = (1.0 + u) ** 2 * gamma
    s_max = (1.0 + u) ** 2 * (1.0 + gamma)
    return inputs + acc + u * s_max + 1e-5


def _bf16_to_f64(bits: np.ndarray) -> np.ndarray:
    """Values of bfloat16 numbers given as int16 bit patterns (exact)."""
    return (bits.astype(np.int32) << 16).view(np.float32).astype(np.float64)


def _bf16_floor(y: np.ndarray) -> np.ndarray:
    """int16 bit patterns of the largest bfloat16 values ``<= y`` (float64, no NaN)."""
    v = y.astype(np.float32)
    v = np.where(v.astype(np.float64) > y, np.nextafter(v, np.float32(-np.inf)), v)  # float32 floor of y
    bits = v.view(np.uint32)
    hi = (bits >> 16).astype(np.int64)
    hi += ((bits >> 31) == 1) & ((bits & 0xFFFF) != 0)  # negative: truncation rounds up, step one further down
    return hi.astype(np.uint16).view(np.int16)


def _bf16_lower_bar(b: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``U^-1(D(b) - 2e)`` (see :class:`_Bf16Binary`): a bf16 score below it belongs to an item whose exact score is
    below that of every item with bf16 score ``>= b`` (float64 arrays; ``b`` finite)."""
    lo = b - _BF16_U * np.abs(b) - 2.0 * e
    return np.where(lo >= 0, lo / (1.0 + _BF16_U), lo / (1.0 - _BF16_U))


class _Bf16Binary:
    """Binary metrics of a query chunk from a bf16 score pass plus exact float64 rescoring (CPU).

    Error bound. Let ``x, y`` be the normalised embeddings, ``x^, y^`` their bf16 roundings, ``s = x.y`` and ``b`` the
    bf16 score returned by the matmul (fp32 accumulation of the exact bf16 products, then rounding to bf16). Then
    ``x^.y^ - x.y = (x^ - x).y^ + x.(y^ - y)``, so by Cauchy-Schwarz ``|x^.y^ - s| <= e_x |y^| + |x| e_y`` with
    ``e_x = |x^ - x|`` computed per vector; the fp32 sum ``z`` of the d products is within ``gamma_d |x^| |y^|`` of
    ``x^.y^`` (``gamma_d = d u32 / (1 - d u32)``, any summation order; products of bf16 numbers are exact in fp32);
    the output rounding gives ``|b - z| <= u |b|`` (u = 2^-8; subnormals and flushed terms are below 1e-30). So
    ``D(b) - E <= s <= U(b) + E`` with ``D(b) = b - u|b|``, ``U(b) = b + u|b|`` (both increasing) and, per query,
    ``E = e_q max|y^| + |q| max e_y + gamma_d |q^| max|y^| + d 2^-52`` (the last term covers the float64 rescoring).

    Candidates. If a negative n ranks at or above a positive p (``s_n >= s_p``), then ``U(b_n) + E >= s_n >= s_p >=
    D(b_p) - E``, so ``b_n >= U^-1(D(b_p) - 2E)`` (:func:`_bf16_lower_bar`). With ``b_p`` the lowest positive bf16
    score, every negative that precedes some positive is above that bar. For metrics that only look at positions
    ``<= K`` (K = R for R-precision and MAP@R, the largest cut-off for recall; not ``map``): with ``v_K`` the K-th
    largest bf16 score, K items have ``s >= D(v_K) - E``, so every item in the top K has ``s >= D(v_K) - E`` and
    ``b >= U^-1(D(v_K) - 2E)``; the bar is raised to that. All items above the bar and the positives above it are
    rescored in float64 (one score per (query, distinct gallery vector), so duplicates tie exactly). Every item
    ranked before a positive within the top K is then counted exactly; positives below the bar are outside the top K
    and are placed after it. The counts ``n_i`` that matter are therefore those of the float64 ranking, ties
    included (pessimistic). When a chunk has too many candidates to be worth it (poor embeddings), it is scored
    densely in float64 instead.
    """

    split_rows = True

    def __init__(self, emb, binary_labels, g_idx, gal_pos, gallery, exclude_self, wanted, recall_at) -> None:
        self.emb, self.gallery = emb, gallery
        self.exclude_self, self.wanted, self.recall_at = exclude_self, wanted, recall_at
        gal = emb[g_idx]  # [M, D]
        self.m, d = gal.shape
        self.gal_np = gal.numpy()
        self.gal_bf_t = gal.to(torch.bfloat16).T.contiguous()  # [D, M]: the fastest layout for oneDNN
        e_max, n_max = 0.0, 0.0
        for s in range(0, self.m, 8192):  # per-vector rounding errors, in blocks to bound memory
            blk = gal[s : s + 8192].double()
            blk_bf = gal[s : s + 8192].to(torch.bfloat16).double()
            e_max = max(e_max, float((blk_bf - blk).norm(dim=1).max()))
            n_max = max(n_max, float(blk_bf.norm(dim=1).max()))
        self.e_max, self.n_max = e_max, n_max
        self.gamma = d * _FP32_U / (1.0 - d * _FP32_U)
        self.slack = d * 2.0**-52 + 1e-30
        self.labels = binary_labels.numpy()
        self.g_lab = binary_labels[g_idx].numpy()
        self.gal_pos = gal_pos.numpy()
        self.order = np.argsort(self.g_lab, kind="stable")
        self.uniq, self.counts = np.unique(self.g_lab[self.order], return_counts=True)
        self.starts = np.cumsum(self.counts) - self.counts
        # distinct-vector id of every gallery item: pairs are rescored once per (query, distinct vector)
        inv = gallery.inv
        self.uid = inv.numpy() if inv is not None else np.arange(self.m)
        self.first_of_uid = np.zeros(int(self.uid.max()) + 1, dtype=np.int64)
        self.first_of_uid[self.uid] = np.arange(self.m)
        self.gallery64: _Gallery64 | None = None
        self.buf: Tensor | None = None

    def produce(self, qi: Tensor) -> Tensor:
        """``[C, M]`` bf16 scores of the chunk (a reused buffer)."""
        c = qi.numel()
        buf = self.buf
        if buf is None or buf.shape[0] < c:
            buf = self.buf = torch.empty(c, self.m, dtype=torch.bfloat16)
        out = buf[:c]
        torch.mm(self.emb[qi].to(torch.bfloat16), self.gal_bf_t, out=out)
        return out

    def finish(self, qi: Tensor, scores_bf: Tensor) -> dict[str, Tensor]:
        m, wanted = self.m, self.wanted
        qn = qi.numpy()
        c = qn.size
        s16 = scores_bf.view(torch.int16).numpy()  # [C, M] bit patterns, shared with the buffer
        ql = self.labels[qn]
        k = np.minimum(np.searchsorted(self.uniq, ql), self.uniq.size - 1)
        cnt = np.where(self.uniq[k] == ql, self.counts[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = np.arange(p_max)
        members = self.order[np.minimum(self.starts[k][:, None] + ar, m - 1)]  # [C, P] gallery positions
        self_pos = self.gal_pos[qn] if self.exclude_self else np.full(c, -1)
        slot = (ar < cnt[:, None]) & (members != self_pos[:, None])
        has_self = self_pos >= 0
        s16[np.arange(c)[has_self], self_pos[has_self]] = _BF16_NEG_INF
        npos = slot.sum(1)
        q64 = self.emb[qi].double()
        q_bf = self.emb[qi].to(torch.bfloat16).double()
        e_q = (q_bf - q64).norm(dim=1).numpy()
        err = e_q * self.n_max + q64.norm(dim=1).numpy() * self.e_max
        err += self.gamma * q_bf.norm(dim=1).numpy() * self.n_max + self.slack  # [C] the bound E of each query
        b_pos = _bf16_to_f64(np.take_along_axis(s16, members, 1))  # [C, P]
        has_pos = npos > 0
        bar = np.full(c, np.inf)
        bar[has_pos] = _bf16_lower_bar(np.where(slot, b_pos, np.inf).min(1)[has_pos], err[has_pos])
        rows, cols, cand16 = self._candidates(s16, bar)
        if rows.size > c * m // 16:
            return self._dense(qi)
        vals = _bf16_to_f64(cand16)
        if "map" not in wanted:
            depth = npos.copy()
            if "recall" in wanted:
                depth = np.maximum(depth, max(int(r) for r in self.recall_at))
            depth = np.clip(depth, 1, m - int(self.exclude_self))
            v_k = self._kth_largest(rows, cand16, depth, c)  # NaN where fewer candidates than the depth
            ok = has_pos & ~np.isnan(v_k)
            bar[ok] = np.maximum(bar[ok], _bf16_lower_bar(v_k[ok], err[ok]))
            keep = vals >= bar[rows]
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        neg = self.g_lab[cols] != ql[rows]  # positives are read from the label groups
        rows_n, cols_n, v_n = rows[neg], cols[neg], vals[neg]
        rescore = slot & (b_pos >= bar[:, None])  # positives below the bar are beyond position K
        # exact scores only where the order of a negative and a positive of the same query is not settled by the
        # intervals [D(b) - E, U(b) + E]; elsewhere the bf16 score stands in (it keeps every settled order strict)
        half_n = _BF16_U * np.abs(v_n) + err[rows_n]
        b_res = np.where(rescore, b_pos, 0.0)  # finite
        lo_p, hi_p = b_res - (_BF16_U * np.abs(b_res) + err[:, None]), b_res + (_BF16_U * np.abs(b_res) + err[:, None])
        if p_max <= 64:
            overlap = (lo_p[rows_n] <= (v_n + half_n)[:, None]) & (hi_p[rows_n] >= (v_n - half_n)[:, None])
            overlap &= rescore[rows_n]  # [negatives, P]
            amb_n = overlap.any(1)
            amb_flat = (rows_n[:, None] * p_max + ar)[overlap]
            amb_p = np.bincount(amb_flat, minlength=c * p_max).reshape(c, p_max).astype(bool)
        else:
            amb_n, amb_p = np.ones(rows_n.size, dtype=bool), rescore
        rows_a, cols_a = rows_n[amb_n], cols_n[amb_n]
        rows_p, slot_p = np.nonzero(amb_p)
        key = np.concatenate([rows_a, rows_p]) * m + self.uid[np.concatenate([cols_a, members[rows_p, slot_p]])]
        ukey, kinv = np.unique(key, return_inverse=True)  # one score per (query, distinct vector): exact ties
        u_rows, u_cols = np.divmod(ukey, m)
        gal_rows = self.gal_np[self.first_of_uid[u_cols]].astype(np.float64)
        exact = np.einsum("ij,ij->i", q64.numpy()[u_rows], gal_rows)[kinv.ravel()]
        v_n[amb_n] = exact[: rows_a.size]
        v_p = b_pos.copy()
        v_p[rows_p, slot_p] = exact[rows_a.size :]
        # order negatives and positives by (query, score descending, negatives first within ties): a positive's n_i
        # is the number of negatives before it in its query
        rows_r, slot_r = np.nonzero(rescore)
        all_rows = np.concatenate([rows_n, rows_r])
        is_pos = np.arange(all_rows.size) >= rows_n.size
        order = np.lexsort((is_pos, -np.concatenate([v_n, v_p[rows_r, slot_r]]), all_rows))
        r_o, p_o = all_rows[order], is_pos[order]
        neg_before = np.cumsum(~p_o) - ~p_o  # over all queries, exclusive
        neg_start = np.cumsum(np.bincount(rows_n, minlength=c)) - np.bincount(rows_n, minlength=c)
        n_neg = np.full((c, p_max), m, dtype=np.int64)  # positives below the bar: past every cut-off
        orig = order[p_o] - rows_n.size  # the positives, in sorted order, as indices into rows_r / slot_r
        n_neg[rows_r[orig], slot_r[orig]] = neg_before[p_o] - neg_start[r_o[p_o]]
        n_neg.sort(axis=1)  # the i-th best positive has the i-th smallest count (counts fall as scores rise)
        return _binary_metrics(torch.from_numpy(npos), torch.from_numpy(n_neg), wanted, self.recall_at)

    @staticmethod
    def _candidates(s16: np.ndarray, bar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, cols, bits)`` of the entries with a bf16 score ``>= bar`` (per row, float64)."""
        c, m = s16.shape
        t_bits = _bf16_floor(bar)
        t_val = _bf16_to_f64(t_bits)
        # for a threshold t > 0 the int16 order of bit patterns is the float order on [t, inf) and every pattern
        # below t's (negatives, -0) is a value < t: one integer compare per score
        fast = t_val > 0
        thr = np.where(fast, t_bits, np.int16(32767))
        flat = np.flatnonzero(s16 >= thr[:, None])
        slow = np.flatnonzero(~fast)
        if slow.size:
            sub = (s16[slow].astype(np.int32) << 16).view(np.float32) >= t_val[slow, None].astype(np.float32)
            r2, c2 = np.nonzero(sub)
            flat = np.concatenate([flat, slow[r2] * m + c2])
        rows, cols = np.divmod(flat, m)
        return rows, cols, s16.ravel()[flat]

    @staticmethod
    def _kth_largest(rows: np.ndarray, bits: np.ndarray, depth: np.ndarray, c: int) -> np.ndarray:
        """``[C]`` the ``depth[r]``-th largest bf16 value among the candidates of row r (NaN if it has fewer)."""
        b = bits.astype(np.int64)
        mono = np.where(b >= 0, b, -b - 32769)  # order-preserving integer key of the bf16 value
        srt = np.sort((rows.astype(np.int64) << 16) | (32767 - mono))  # rows ascending, values descending
        cnt = np.bincount(rows, minlength=c)
        start = np.cumsum(cnt) - cnt
        out = np.full(c, np.nan)
        ok = cnt >= depth
        mono_k = 32767 - (srt[start[ok] + depth[ok] - 1] & 0xFFFF)
        out[ok] = _bf16_to_f64(np.where(mono_k >= 0, mono_k, -mono_k - 32769).astype(np.int16))
        return out

    def _dense(self, qi: Tensor) -> dict[str, Tensor]:
        """Dense float64 scores of the chunk (the same float64 ranking), for chunks with too many candidates."""
        if self.gallery64 is None:
            self.gallery64 = _Gallery64(self.gallery)
        self_pos = torch.from_numpy(self.gal_pos)[qi] if self.exclude_self else None
        scores, valid = _dense_scores(self.emb[qi], self.gallery64, self_pos)
        lab = torch.from_numpy(self.labels)
        pos = (lab[qi][:, None] == torch.from_numpy(self.g_lab)[None, :]) & valid
        return _binary_metrics_from_scores(scores, pos, self.wanted, self.recall_at)


_MAX_LEVELS = 255  # the count engine packs a level into 8 bits of its sort key
_SPARSE_FRACTION = 16  # count by candidates when at most 1/16 of the scores reach the lowest threshold
_CELL_ROWS = 8  # rows per cell histogram
_CELLS_PER_THRESHOLD = 8
_GRADED_BLOCK = 1 << 17  # relevant items per block of rows in the count engine


def _count_at_or_above_sorted(
    scores: np.ndarray, thresholds: np.ndarray, n_real: np.ndarray, method: str = "auto", cells_per_thr: int = 0
) -> np.ndarray:
    """``[C, K]`` int64: the number of entries of ``scores[r]`` that are ``>= thresholds[r, k]``.

    ``thresholds [C, K]`` holds ``n_real[r]`` ascending real thresholds first in each row (the rest is ignored and
    gets 0). Exact for float32 and float64. ``method``: ``"sparse"`` gathers the entries at or above the row's
    lowest threshold and looks each up among the thresholds (cheap when few entries reach it); ``"cells"`` is the
    ``O(M)`` cell histogram of :func:`_count_cells`; ``"auto"`` picks sparse when at most 1/16 of the entries reach
    the lowest threshold.
    """
    c, m = scores.shape
    if thresholds.dtype != scores.dtype:
        raise ValueError(f"thresholds ({thresholds.dtype}) must have the scores' dtype ({scores.dtype}) to be exact")
    cells_per_thr = cells_per_thr or _CELLS_PER_THRESHOLD
    out = np.zeros(thresholds.shape, dtype=np.int64)
    if thresholds.shape[1] == 0 or not n_real.any():
        return out
    lowest = np.where(n_real > 0, thresholds[:, 0], np.inf).astype(scores.dtype)
    reach = scores >= lowest[:, None] if method != "cells" else None
    if method == "sparse" or (method == "auto" and np.count_nonzero(reach) * _SPARSE_FRACTION <= c * m):
        flat = np.flatnonzero(reach)
        vals = scores.ravel()[flat]
        bounds = np.searchsorted(flat, np.arange(c + 1) * m)
        for r in np.flatnonzero(n_real > 0):
            nr = int(n_real[r])
            idx = np.searchsorted(thresholds[r, :nr], vals[bounds[r] : bounds[r + 1]], side="right")
            hist = np.bincount(idx, minlength=nr + 1)  # hist[b]: entries with exactly b thresholds <= them
            out[r, :nr] = np.cumsum(hist[::-1])[::-1][1:]
        return out
    for r0 in range(0, c, _CELL_ROWS):  # a few rows per histogram: its tables stay in cache
        rs = slice(r0, r0 + _CELL_ROWS)
        out[rs] = _count_cells(scores[rs], thresholds[rs], n_real[rs], cells_per_thr)
    return out


def _count_cells(scores: np.ndarray, thresholds: np.ndarray, n_real: np.ndarray, cells_per_thr: int) -> np.ndarray:
    """:func:`_count_at_or_above_sorted` by a histogram over a monotone cell map (a few rows at a time).

    Per row, ``f(s) = clip(trunc(fl(fl(s - a) * w) + 1.5), 0, G + 2)`` with ``a`` the lowest threshold and
    ``w = G / (highest - lowest)``; every floating-point step is monotone, so ``f`` is non-decreasing in ``s``:
    ``f(s) > f(t)`` implies ``s > t`` and ``f(s) < f(t)`` implies ``s < t``, whatever the rounding. Hence
    ``#{s >= t} = #{f(s) > f(t)} + #{f(s) = f(t), s >= t}``: the first term is a suffix sum of the cell histogram,
    the second needs exact comparisons only for the entries in a cell that holds a threshold (a small fraction with
    ``G = 8 x`` the number of thresholds). ``O(M + K)`` per row instead of the ``O(M log M)`` of a sort.
    """
    b, m = scores.shape
    k = thresholds.shape[1]
    dt = scores.dtype
    real = np.arange(k)[None, :] < n_real[:, None]
    has = n_real > 0
    lo = np.where(has, thresholds[:, 0], 0).astype(dt)
    hi = np.where(has, thresholds[np.arange(b), np.maximum(n_real - 1, 0)], 0).astype(dt)
    g = int(min(max(16, cells_per_thr * int(n_real.max())), 2 * m, 1 << 21))
    span = hi.astype(np.float64) - lo.astype(np.float64)
    w = np.where(span > 0, g / np.maximum(span, 1e-300), 1.0)
    w = np.minimum(w, 1e30).astype(dt)  # any positive finite scale keeps f monotone
    n_cells = g + 3
    offset = (np.arange(b, dtype=np.int64) * n_cells)[:, None]

    def cells(x: np.ndarray) -> np.ndarray:  # flat (row, cell) ids; the same arithmetic for scores and thresholds
        y = np.subtract(x, lo[:, None], dtype=dt)
        np.multiply(y, w[:, None], out=y)
        np.add(y, dt.type(1.5), out=y)
        np.clip(y, 0, g + 2, out=y)
        ids = y.astype(np.int64)
        ids += offset
        return ids

    cell = cells(scores).ravel()  # [B*M]
    above = m - np.cumsum(np.bincount(cell, minlength=b * n_cells).reshape(b, n_cells), axis=1).ravel()
    thr = thresholds[real]  # real thresholds, row after row, ascending within a row
    thr_cell = cells(thresholds)[real]  # non-decreasing
    n_ge = np.take(above, thr_cell)  # entries in higher cells
    per_cell = np.bincount(thr_cell, minlength=b * n_cells)
    first = np.cumsum(per_cell) - per_cell  # index in ``thr`` of the first threshold of each cell
    fine = np.flatnonzero(np.take(per_cell.astype(bool), cell))  # entries sharing a cell with a threshold
    if fine.size:
        f_cell = np.take(cell, fine)
        f_val = np.take(scores.ravel(), fine)
        f_first = np.take(first, f_cell)
        f_n = np.take(per_cell, f_cell)
        le = (np.take(thr, f_first) <= f_val).astype(np.int64)  # thresholds of the cell that are <= the entry
        heavy = f_n > 16
        sel = np.flatnonzero((f_n > 1) & ~heavy)
        j = 1
        while sel.size:
            le[sel] += np.take(thr, f_first[sel] + j) <= f_val[sel]
            j += 1
            sel = sel[f_n[sel] > j]
        if heavy.any():  # many tied or crowded thresholds in one cell: binary search within the cell
            h = np.flatnonzero(heavy)
            h = h[np.argsort(f_cell[h], kind="stable")]
            ids, seg = np.unique(f_cell[h], return_index=True)
            for cell_id, at in zip(ids, np.split(h, seg[1:])):
                t0, tn = int(first[cell_id]), int(per_cell[cell_id])
                le[at] = np.searchsorted(thr[t0 : t0 + tn], f_val[at], side="right")
        # the entry is >= the cell's thresholds first .. first + le - 1: a difference array over ``thr``
        diff = np.bincount(f_first, minlength=thr.size + 1) - np.bincount(f_first + le, minlength=thr.size + 1)
        n_ge += np.cumsum(diff)[: thr.size]
    out = np.zeros((b, k), dtype=np.int64)
    out[real] = n_ge
    return out


class _CountEngine:
    """CPU engine for graded (and binary) metrics on flat or hierarchical labels.

    Per chunk: dense scores by BLAS (numpy) in the embeddings' dtype; binary positives from the column-0 label groups
    and graded relevant items from the label tree (:class:`_TreeRanker`'s contiguous ranges), so no ``[C, M]`` label
    matrix is built. The relevant items of a query are sorted by (score, level) and masked out of the row; the
    number of irrelevant items scoring ``>=`` each of them comes from :func:`_count_at_or_above_sorted`. The
    position of the k-th relevant item in the (pessimistic) ranking is ``k + #irrelevant >= its score``.
    """

    split_rows = True

    def __init__(self, emb, labels, g_idx, gal_pos, gallery, exclude_self, want_binary, want_graded, recall_at, rel):
        self.emb_np = emb.numpy()
        self.uniq = gallery.uniq.numpy()
        self.inv = gallery.inv.numpy() if gallery.inv is not None else None
        self.m = g_idx.numel()
        self.exclude_self, self.want_binary, self.want_graded, self.recall_at = (
            exclude_self,
            want_binary,
            want_graded,
            recall_at,
        )
        self.relevance, self.alpha, self.count_self = rel
        self.n_lv = num_levels(labels)
        tree = _TreeRanker(labels, g_idx, gal_pos)
        self.node_ids = [x.numpy() for x in tree.node_ids]
        self.sorted_ids = [x.numpy() for x in tree.sorted_ids]
        self.perm = tree.perm.numpy().astype(np.int32)  # m < 2^31
        self.col0 = tree.col0.numpy()
        self.order0, self.uniq0 = tree.order0.numpy(), tree.uniq0.numpy()
        self.counts0, self.starts0 = tree.counts0.numpy(), tree.starts0.numpy()
        self.gal_pos = gal_pos.numpy()
        self.buf: np.ndarray | None = None

    def produce(self, qi: Tensor) -> np.ndarray:
        """``[C, M]`` scores of the chunk (a reused buffer), -inf at the query's own gallery entry."""
        qn = qi.numpy()
        c = qn.size
        buf = self.buf
        if buf is None or buf.shape[0] < c:
            buf = self.buf = np.empty((c, self.m), dtype=self.emb_np.dtype)
        scores = buf[:c]
        q = self.emb_np[qn]
        if self.inv is None:
            np.matmul(q, self.uniq.T, out=scores)
        else:  # distinct vectors scored once, so duplicates tie exactly
            np.take(q @ self.uniq.T, self.inv, axis=1, out=scores)
        if self.exclude_self:
            sp = self.gal_pos[qn]
            has = sp >= 0
            scores[np.flatnonzero(has), sp[has]] = -np.inf
        return scores

    def finish(self, qi: Tensor, scores: np.ndarray) -> dict[str, Tensor]:
        qn = qi.numpy()
        self_pos = self.gal_pos[qn] if self.exclude_self else np.full(qn.size, -1)
        out: dict[str, Tensor] = {}
        if self.want_binary:
            out.update(self._binary(qn, scores, self_pos))
        if self.want_graded:
            out.update(self._graded(qn, scores, self_pos))
        return out

    def _binary(self, qn: np.ndarray, scores: np.ndarray, self_pos: np.ndarray) -> dict[str, Tensor]:
        c, m = scores.shape
        ql = self.col0[qn]
        k = np.minimum(np.searchsorted(self.uniq0, ql), self.uniq0.size - 1)
        cnt = np.where(self.uniq0[k] == ql, self.counts0[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = np.arange(p_max)
        members = self.order0[np.minimum(self.starts0[k][:, None] + ar, m - 1)]
        slot = (ar < cnt[:, None]) & (members != self_pos[:, None])
        npos = slot.sum(1)
        p_asc = np.sort(np.where(slot, np.take_along_axis(scores, members, 1), np.inf), axis=1)  # real ones first
        ge_all = _count_at_or_above_sorted(scores, p_asc, npos)  # [C, P] any item >= p
        # positives >= p: everything from the first of p's ties on (ascending order)
        start = np.concatenate([np.ones((c, 1), bool), p_asc[:, 1:] != p_asc[:, :-1]], axis=1)
        tie_start = np.maximum.accumulate(np.where(start, ar, 0), axis=1)
        n_neg_asc = ge_all - (npos[:, None] - tie_start)
        # the i-th best positive is the (npos - 1 - i)-th in ascending order
        n_neg = np.take_along_axis(n_neg_asc, np.clip(npos[:, None] - 1 - ar, 0, None), 1)
        return _binary_metrics(torch.from_numpy(npos), torch.from_numpy(n_neg), self.want_binary, self.recall_at)

    def _ranges(self, qn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = [], []
        for ids, sid in zip(self.node_ids, self.sorted_ids):
            qid = ids[qn]
            starts.append(np.searchsorted(sid, qid, side="left"))
            ends.append(np.searchsorted(sid, qid, side="right"))
        return np.stack(starts, 1), np.stack(ends, 1)

    def _graded(self, qn: np.ndarray, scores: np.ndarray, self_pos: np.ndarray) -> dict[str, Tensor]:
        start, end = self._ranges(qn)  # [C, L] tree-order ranges, nested: depth 1 widest
        n_cand = end[:, 0] - start[:, 0]
        step = max(1, _GRADED_BLOCK // max(int(n_cand.max()), 1))  # row blocks of relevant items stay in cache
        outs = [
            self._graded_block(scores[r : r + step], start[r : r + step], end[r : r + step], self_pos[r : r + step])
            for r in range(0, qn.size, step)
        ]
        return {key: torch.from_numpy(np.concatenate([o[key] for o in outs])) for key in outs[0]}

    def _graded_block(self, scores: np.ndarray, start: np.ndarray, end: np.ndarray, self_pos: np.ndarray) -> dict:
        b, m = scores.shape
        n_lv = self.n_lv
        n_cand = end[:, 0] - start[:, 0]
        r_max = max(int(n_cand.max()), 1)
        ar = np.arange(r_max, dtype=np.int32)
        tpos = start[:, :1].astype(np.int32) + ar  # [B, R] tree-order positions
        in_range = ar < n_cand[:, None]
        # level = number of nested ranges holding the position: +1 at each range start, -1 at its end, cumsum
        steps = np.zeros((b, r_max + 1), dtype=np.int32)
        rows = np.arange(b)
        for d in range(n_lv):
            np.add.at(steps, (rows, start[:, d] - start[:, 0]), 1)
            np.add.at(steps, (rows, end[:, d] - start[:, 0]), -1)
        level = np.cumsum(steps[:, :r_max], axis=1, dtype=np.int32)
        gpos = np.take(self.perm, np.minimum(tpos, m - 1, out=tpos))  # gallery positions
        real = in_range & (gpos != self_pos[:, None])
        level[~real] = 0
        n_rel = real.sum(1)
        flat = gpos + (np.arange(b) * m)[:, None]  # [B, R] int64 index into the block
        rel_s = np.take(scores, flat)
        np.put(scores, flat[in_range], -np.inf)  # relevant items out: count the irrelevant ones (our buffer)
        counts = np.bincount((level + (np.arange(b, dtype=np.int32) * (n_lv + 1))[:, None]).ravel(),
                             minlength=b * (n_lv + 1)).reshape(b, n_lv + 1).astype(np.float64)  # fmt: skip
        counts[:, 0] = m - (self_pos >= 0) - n_rel
        tab_counts = counts.copy()
        if self.count_self:
            tab_counts[:, n_lv] += self_pos >= 0  # the query itself, at the finest level (HAPPIER's convention)
        if self.relevance == "pop":
            table = pop_relevance_table(torch.from_numpy(tab_counts), self.alpha).numpy()
        else:
            table = map_relevance_table(torch.from_numpy(tab_counts), self.alpha).numpy()
        # relevant items by (score ascending, level descending): the reverse of the pessimistic ranking
        rel_s += 0.0  # -0 -> +0
        if scores.dtype == np.float32:
            bits = rel_s.view(np.int32)
            key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)  # order-preserving integer key
            key <<= 8
            key |= 255 - level
            key[~real] = np.iinfo(np.int64).max
            key.sort(axis=1)
            level = (255 - (key & 255)).astype(np.int32)
            key >>= 8
            bits = key.astype(np.int32)
            rel_s = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.float32)
        else:
            order = np.lexsort((255 - level, np.where(real, rel_s, np.inf)), axis=-1)
            level, rel_s = np.take_along_axis(level, order, 1), np.take_along_axis(rel_s, order, 1)
        real = ar < n_rel[:, None]
        level[~real] = 0
        rel_s[~real] = np.inf
        n_irr = _count_at_or_above_sorted(scores, rel_s, n_rel)  # [B, R]
        position = n_rel[:, None] - ar + n_irr  # 1-based, in the full ranking
        return _graded_from_ascending(level, position, real, table, counts, n_lv, self.want_graded)


def _graded_from_ascending(
    level: np.ndarray, position: np.ndarray, real: np.ndarray, table: np.ndarray, counts: np.ndarray, n_lv: int, wanted
) -> dict[str, np.ndarray]:
    """NDCG / H-AP / ASI per query from its relevant items in *reverse* ranking order.

    ``level [C, R]`` (1..T), ``position [C, R]`` (1-based, full ranking), ``real [C, R]`` (the rest is padding),
    ``table [C, T+1]`` the relevance of each level and ``counts [C, T+1]`` the gallery items at each level.
    """
    c, r_max = level.shape
    n_rel = counts[:, 1:].sum(1)
    has_rel = n_rel > 0
    out: dict[str, np.ndarray] = {"_has_rel": has_rel}
    pos = np.where(real, position, 1).astype(np.float64)
    flat_level = level + (np.arange(c, dtype=np.int32) * (n_lv + 1))[:, None]  # index into [C, T+1] tables
    if "ndcg" in wanted:
        gains = 2.0 ** np.arange(n_lv + 1) - 1.0
        dcg = (gains[level] / np.log2(1.0 + pos)).sum(1)  # padding has level 0, gain 0
        disc = 1.0 / np.log2(2.0 + np.arange(r_max))  # positions 1..R
        cdisc = np.concatenate([[0.0], np.cumsum(disc)])
        idcg = np.zeros(c)
        above = np.zeros(c, dtype=np.int64)
        for lv in range(n_lv, 0, -1):  # ideal: levels in decreasing order
            end = above + counts[:, lv].astype(np.int64)
            idcg += gains[lv] * (cdisc[end] - cdisc[above])
            above = end
        out["ndcg"] = np.where(has_rel, dcg / np.maximum(idcg, 1e-300), np.nan)
    if "hap" not in wanted and "asi" not in wanted:
        return out
    rel_k = np.take(table, flat_level)  # [C, R] (level 0 has relevance 0)
    hrank = rel_k.copy()
    own_before = np.zeros((c, r_max), dtype=np.int32)  # items of the same level ranked before
    is_lv = np.empty((c, r_max), dtype=bool)
    before = np.empty((c, r_max), dtype=np.int32)
    term = np.empty((c, r_max))
    present = counts[:, 1:].sum(0) > 0
    for lv in range(1, n_lv + 1):
        if not present[lv - 1]:
            continue
        np.equal(level, lv, out=is_lv)
        np.cumsum(is_lv, axis=1, dtype=np.int32, out=before)
        np.subtract(before[:, -1:], before, out=before)  # ranked before = later in this (reversed) order
        if "hap" in wanted:
            np.minimum(rel_k, table[:, lv : lv + 1], out=term)
            term *= before
            hrank += term
        np.copyto(own_before, before, where=is_lv)
    if "hap" in wanted:
        contrib = (hrank / pos).sum(1)  # padding has relevance 0
        total_rel = (table * counts).sum(1)
        out["hap"] = np.where(has_rel, contrib / np.maximum(total_rel, 1e-300), np.nan)
    if "asi" in wanted:
        n_max = int(n_rel.max()) if c else 0
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_max + 1))])  # H_0..H_nmax
        suffix = counts[:, ::-1].cumsum(1)[:, ::-1]  # items at level >= l
        above_lv = np.concatenate([suffix[:, 1:], np.zeros((c, 1))], axis=1).astype(np.int64)  # items above l
        n_r = n_rel.astype(np.int64)[:, None]
        # the item counts for n = first .. R, first = max(position, rank within its level + items above it)
        first = np.maximum(np.where(real, position, n_r + 1), own_before + 1 + np.take(above_lv, flat_level))
        np.minimum(first, n_r + 1, out=first)
        out["asi"] = np.where(has_rel, (harmonic[n_r] - harmonic[first - 1]).sum(1) / np.maximum(n_rel, 1), np.nan)
    return out


def _sort_desc_pessimistic(scores: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by decreasing score, ties by increasing level (pessimistic); returns (scores, levels)."""
    order = torch.sort(levels, dim=1, stable=True).indices
    s = scores.gather(1, order)
    order2 = torch.sort(s, dim=1, descending=True, stable=True).indices
    return s.gather(1, order2), levels.gather(1, order.gather(1, order2))


def _graded_metrics(
    scores: Tensor, levels: Tensor, valid: Tensor, table: Tensor, n_lv: int, wanted: Sequence[str]
) -> dict[str, Tensor]:
    """Per-query NDCG / H-AP / ASI (NaN where a query has no relevant item).

    Only relevant items (level > 0) need a position: irrelevant scores are sorted once per row and each relevant
    item's position is ``1 + #relevant before it + #irrelevant with score >= its own`` (pessimistic ties); the
    relevant items themselves are sorted by (score desc, level asc). Work is ``O(M log M)`` per query plus
    ``O(R log R)`` for its R relevant items.
    """
    dev = scores.device
    c, m = scores.shape
    counts = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=dev)
    counts.scatter_add_(1, levels, valid.double())  # [C, T+1] gallery items at each level
    relmask = levels > 0  # invalid items have level 0
    n_rel_i = relmask.sum(1)  # [C]
    r_max = max(int(n_rel_i.max()), 1)
    # pack relevant items into [C, R] (row-major nonzero keeps rows together)
    rows, cols = relmask.nonzero(as_tuple=True)
    row_start = n_rel_i.cumsum(0) - n_rel_i
    off = torch.arange(rows.numel(), device=dev) - row_start[rows]
    rel_s = torch.full((c, r_max), -math.inf, dtype=scores.dtype, device=dev)
    rel_t = torch.zeros(c, r_max, dtype=torch.long, device=dev)
    rel_s[rows, off] = scores[rows, cols]
    rel_t[rows, off] = levels[rows, cols]
    rel_s, rel_t = _sort_desc_pessimistic(rel_s, rel_t)  # padding (-inf, level 0) goes last
    real = torch.arange(r_max, device=dev)[None, :] < n_rel_i[:, None]  # [C, R]
    # irrelevant items at or above each relevant one (ties: the irrelevant one first)
    irr_sorted = _sort_rows(scores.masked_fill(relmask, -math.inf))
    n_irr = m - torch.searchsorted(irr_sorted, rel_s.contiguous(), side="left")  # [C, R]
    j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
    position = j[None, :] + n_irr.double()  # [C, R] 1-based position in the full ranking
    table_counts = (table, counts)
    return _graded_from_positions(rel_t, position, real, table_counts, n_lv, wanted)


def _graded_from_positions(
    rel_t: Tensor, position: Tensor, real: Tensor, table_counts: tuple[Tensor, Tensor], n_lv: int, wanted
) -> dict[str, Tensor]:
    """NDCG / H-AP / ASI from the relevant items of each query in ranking order.

    ``rel_t [C, R]`` levels (1..T) in ranking order, ``position [C, R]`` their 1-based positions in the full
    ranking, ``real [C, R]`` marks actual items (the rest is padding), ``table [C, T+1]`` the relevance of each
    level and ``counts [C, T+1]`` the number of gallery items at each level.
    """
    table, counts = table_counts
    dev = rel_t.device
    c, r_max = rel_t.shape
    n_rel = counts[:, 1:].sum(1)
    has_rel = n_rel > 0
    nan = torch.full((c,), math.nan, dtype=torch.float64, device=dev)
    j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
    out: dict[str, Tensor] = {"_has_rel": has_rel}
    onehots = {lv: (rel_t == lv) & real for lv in range(1, n_lv + 1)}
    if "ndcg" in wanted:
        gains = 2.0 ** torch.arange(n_lv + 1, dtype=torch.float64, device=dev) - 1.0
        dcg = torch.where(real, gains[rel_t] / torch.log2(1.0 + position), 0.0).sum(1)
        disc = 1.0 / torch.log2(2.0 + torch.arange(r_max, dtype=torch.float64, device=dev))  # positions 1..R
        cdisc = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), disc.cumsum(0)])
        idcg = torch.zeros(c, dtype=torch.float64, device=dev)
        above = torch.zeros(c, dtype=torch.long, device=dev)
        for lv in range(n_lv, 0, -1):  # ideal: levels in decreasing order
            end = above + counts[:, lv].long()
            idcg += gains[lv] * (cdisc[end] - cdisc[above])
            above = end
        out["ndcg"] = torch.where(has_rel, dcg / idcg.clamp(min=1e-300), nan)
    if "hap" in wanted:
        rel_k = torch.where(real, table.gather(1, rel_t), 0.0)  # [C, R]
        hrank = rel_k.clone()
        for lv in range(1, n_lv + 1):
            before = onehots[lv].double().cumsum(1) - onehots[lv].double()  # level-lv items ranked before
            hrank += torch.minimum(rel_k, table[:, lv : lv + 1]) * before
        contrib = torch.where(real, hrank / position, 0.0).sum(1)
        total_rel = (table * counts).sum(1)
        out["hap"] = torch.where(has_rel, contrib / total_rel.clamp(min=1e-300), nan)
    if "asi" in wanted:
        # level histogram of the predicted top-n for n = 1..R: relevant items placed at their positions
        in_top = real & (position <= n_rel[:, None])
        slot = (position.long() - 1).clamp(max=r_max - 1)
        n_pos = j[None, :]  # n = 1..R
        inter = torch.zeros(c, r_max, dtype=torch.float64, device=dev)
        above = torch.zeros(c, 1, dtype=torch.float64, device=dev)
        for lv in range(n_lv, 0, -1):
            grid = torch.zeros(c, r_max, dtype=torch.float64, device=dev)
            grid.scatter_add_(1, slot, (onehots[lv] & in_top).double())
            ideal = torch.minimum((n_pos - above).clamp(min=0.0), counts[:, lv : lv + 1])
            inter += torch.minimum(grid.cumsum(1), ideal)
            above = above + counts[:, lv : lv + 1]
        asi = torch.where(n_pos <= n_rel[:, None], inter / n_pos, 0.0).sum(1) / n_rel.clamp(min=1)
        out["asi"] = torch.where(has_rel, asi, nan)
    return out


class _TreeRanker:
    """Dense scoring of flat or hierarchical (tree) labels with one row sort per query.

    The gallery is ordered by its label path from the coarsest column, so the items sharing at least j levels with
    a query form a contiguous range (nested over j): relevant items are gathered without scanning the row, their
    levels come from the nested ranges, and every position is ``#items >= score`` read off the sorted row (ties:
    irrelevant first, then by increasing level). Binary positives (column 0) are gathered the same way.
    """

    def __init__(self, labels: Tensor, g_idx: Tensor, gal_pos: Tensor) -> None:
        lab = labels[:, None] if labels.ndim == 1 else labels
        self.n_lv = lab.shape[1]
        self.gal_pos = gal_pos
        dev = labels.device
        # node id of every item at each depth j = 1..L (columns L-1 .. L-j), in coarse-first lexicographic order
        self.node_ids = []
        for depth in range(1, self.n_lv + 1):
            prefix = lab[:, self.n_lv - depth :].flip(1)
            self.node_ids.append(torch.unique(prefix, dim=0, return_inverse=True)[1])
        self.perm = torch.argsort(self.node_ids[-1][g_idx], stable=True)  # gallery positions, tree order
        self.sorted_ids = [ids[g_idx][self.perm].contiguous() for ids in self.node_ids]
        # binary classes (column 0): gallery positions grouped by label
        col0 = lab[:, 0]
        self.col0 = col0
        g0 = col0[g_idx]
        self.order0 = torch.argsort(g0, stable=True)
        self.uniq0, self.counts0 = torch.unique_consecutive(g0[self.order0], return_counts=True)
        self.starts0 = self.counts0.cumsum(0) - self.counts0
        self.m = g_idx.numel()
        self.dev = dev

    def _ranges(self, qi: Tensor) -> tuple[Tensor, Tensor]:
        """``(start, end) [C, L]``: tree-order range of the gallery items sharing >= j levels (column j-1)."""
        starts, ends = [], []
        for ids, sid in zip(self.node_ids, self.sorted_ids):
            qid = ids[qi].contiguous()
            starts.append(torch.searchsorted(sid, qid, side="left"))
            ends.append(torch.searchsorted(sid, qid, side="right"))
        return torch.stack(starts, 1), torch.stack(ends, 1)

    def binary(self, scores: Tensor, srt: Tensor, qi: Tensor, self_pos: Tensor, wanted, recall_at) -> dict:
        c, m = scores.shape
        ql = self.col0[qi]
        k = torch.searchsorted(self.uniq0, ql).clamp(max=self.uniq0.numel() - 1)
        cnt = torch.where(self.uniq0[k] == ql, self.counts0[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = torch.arange(p_max, device=self.dev)
        members = self.order0[(self.starts0[k][:, None] + ar[None, :]).clamp(max=m - 1)]
        slot = (ar[None, :] < cnt[:, None]) & (members != self_pos[:, None])
        p = torch.where(slot, scores.gather(1, members), -math.inf)
        p = torch.sort(p, dim=1, descending=True).values  # [C, P]
        npos = slot.sum(1)
        ge_all = m - torch.searchsorted(srt, p.contiguous(), side="left")  # items (any) scoring >= p_i
        ge_pos = (p[:, None, :] >= p[:, :, None]).sum(2)  # positives scoring >= p_i (itself included)
        return _binary_metrics(npos, ge_all - ge_pos, wanted, recall_at)

    def graded(self, scores: Tensor, srt: Tensor, qi: Tensor, self_pos: Tensor, relevance, alpha, count_self, wanted):
        c, m = scores.shape
        dev = self.dev
        n_lv = self.n_lv
        start, end = self._ranges(qi)  # [C, L], nested: depth 1 widest
        n_rel_i = end[:, 0] - start[:, 0]
        r_max = max(int(n_rel_i.max()), 1)
        ar = torch.arange(r_max, device=dev)
        tpos = start[:, :1] + ar[None, :]  # tree-order positions [C, R]
        real = ar[None, :] < n_rel_i[:, None]
        gpos = self.perm[tpos.clamp(max=m - 1)]  # gallery positions
        real &= gpos != self_pos[:, None]
        level = torch.zeros(c, r_max, dtype=torch.long, device=dev)
        for d in range(n_lv):
            level += (tpos >= start[:, d : d + 1]) & (tpos < end[:, d : d + 1])
        level = torch.where(real, level, 0)
        rel_s = torch.where(real, scores.gather(1, gpos), -math.inf)
        counts = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=dev)
        counts.scatter_add_(1, level, real.double())
        n_valid = m - (self_pos >= 0).double()
        counts[:, 0] = n_valid - counts[:, 1:].sum(1)
        extra = torch.zeros_like(counts)
        if count_self:
            extra[:, n_lv] = (self_pos >= 0).double()
        tab_counts = counts + extra
        if relevance == "pop":
            table = pop_relevance_table(tab_counts, alpha)
        elif relevance == "map":
            if isinstance(alpha, (int, float)):
                raise ValueError("map relevance takes one weight per level as alpha, e.g. alpha=[1.0, 1.0]")
            table = map_relevance_table(tab_counts, alpha)
        else:
            raise ValueError(f"unknown relevance type {relevance!r}; use 'pop' or 'map'")
        rel_s, rel_t = _sort_desc_pessimistic(rel_s, level)  # padding (-inf, level 0) last
        real = torch.arange(r_max, device=dev)[None, :] < (real.sum(1))[:, None]
        ge_all = m - torch.searchsorted(srt, rel_s.contiguous(), side="left")  # [C, R] any item >= s_k
        rel_asc = rel_s.flip(1).contiguous()  # ascending (padding -inf first)
        ge_rel = r_max - torch.searchsorted(rel_asc, rel_s.contiguous(), side="left")  # relevant >= s_k
        j = torch.arange(1, r_max + 1, dtype=torch.float64, device=dev)
        position = j[None, :] + (ge_all - ge_rel).double()
        return _graded_from_positions(rel_t, position, real, (table, counts), n_lv, wanted)
