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
  on the bf16 error (:func:`bf16_score_error_bound` for the worst case, ``_Bf16Binary`` for the per-vector
  bound actually used) selects the few gallery items that can rank above a positive within the needed depth, and
  the pairs whose order the bf16 error intervals leave open are rescored in float64. The ranking is the float64
  ranking of the normalised embeddings, ties included (proof in ``_Bf16Binary``,
  :mod:`common.metrics.retrieval_bf16`; tested on near-ties, exact duplicates and outliers against dense float64
  scoring);
* graded metrics on flat/hierarchical labels on CPU (``graded_engine="count"``): dense scores in the embeddings'
  dtype by BLAS (so the ranking is the float32 one for float32 embeddings); the relevant items of a query are read
  off the label tree, and the number of irrelevant items scoring ``>=`` each of them comes from a histogram over a
  monotone cell map of the scores, with exact comparisons only inside the cells that hold a relevant score
  (``_count_cells``, :mod:`common.metrics.retrieval_count`): ``O(N)`` per query instead of a row sort. Binary
  metrics are counted on the same scores;
* the same on other devices with torch (``graded_engine="tree"``: one row sort per query,
  :mod:`common.metrics.retrieval_tree`), and the multi-label case (``"generic"``: shared levels computed for every
  pair, :mod:`common.metrics.retrieval_dense`).

On CPU the matmul of a chunk uses every thread, then the counting of its rows is split over
``torch.get_num_threads()`` threads (numpy releases the GIL).
Duplicated gallery embeddings are scored once and expanded, so they always tie exactly (BLAS kernels may otherwise
round identical columns differently). faiss is not used: it returns a top-k list, and exact full-ranking metrics
need counts over the whole gallery; :mod:`common.metrics.knn` wraps faiss for kNN scorers.

Layout. This module holds the public API, the input checks, the choice of engine, the chunk loop and the averaging.
An engine is an object with ``produce(qi)`` (work shared by the chunk's rows: the matmul in the CPU engines),
``finish(qi, payload)`` (per-query metrics of those rows) and ``split_rows`` (whether ``finish`` may run on row
slices in threads, see :func:`_chunk_outputs`). The engines live in
:mod:`common.metrics.retrieval_bf16` (``"bf16"`` candidate pass), :mod:`common.metrics.retrieval_count` (``"count"``),
:mod:`common.metrics.retrieval_tree` (``"tree"``) and :mod:`common.metrics.retrieval_dense` (``"generic"``, plus the
gallery scorer and the per-query formulas that the other engines share).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from common.metrics.relevance import label_kind, num_levels
from common.metrics.retrieval_bf16 import _Bf16Binary
from common.metrics.retrieval_bf16 import bf16_score_error_bound as bf16_score_error_bound
from common.metrics.retrieval_count import _MAX_LEVELS, _CountEngine
from common.metrics.retrieval_dense import _DenseJob, _Gallery
from common.metrics.retrieval_tree import _TreeJob

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
    if embeddings.shape[0] == 0:
        raise ValueError(
            "embeddings are empty (0 items): there is nothing to evaluate; check that the test set is not empty"
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
    exactly (float64) every item that could rank above a positive (``_Bf16Binary``; the result is the float64
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
