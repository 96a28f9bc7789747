"""Exact retrieval metrics over full rankings, chunked over queries.

:func:`evaluate_retrieval` is the public API (docs/metrics.md). Embeddings are L2-normalised and compared by
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
  cnt_l(k)`` (H-AP, HAPPIER Eq. 3-4);
* ``ndcg`` = DCG / IDCG with gain ``2^t - 1`` and discount ``1 / log2(1 + pos)`` over the full ranking;
* ``asi``  = (1/R) sum_{n=1..R} |top-n levels ∩ ideal top-n levels| / n with R = #{t > 0} (ASI, from the DyML benchmark).
  Computed per item: with ``a_l`` gallery items at levels above l, the j-th level-l item of the ranking (at
  position ``p``) adds 1 to the intersection for every ``n >= max(p, j + a_l)``, so
  ``asi = (1/R) sum_k [H_R - H_{max(p_k, j_k + a_l) - 1}]^+`` with ``H_n`` the harmonic numbers (this equals the
  definition because ``min(#{j : p_j <= n}, n - a_l) = #{j : p_j <= n, j <= n - a_l}`` for increasing ``p_j``).

A query without a positive (binary) or without any relevant item (graded) is left out of the average; the counts
are returned as ``num_skipped_queries`` and ``num_skipped_queries_graded``.

How it is computed (all exact, no kNN cut; memory ``O(chunk x N)``). :func:`choose_engine` picks one
:class:`~common.metrics.retrieval_engine.RetrievalEngine` (the interface every engine implements, described in
:mod:`common.metrics.retrieval_engine`); ``candidate_pass`` and ``graded_engine`` force one, for tests:

* binary metrics only, integer labels, any device (:mod:`common.metrics.retrieval_candidates`): one matmul in a low
  precision scores every pair; a per-query bound on its error places each negative among the query's positives
  (scored exactly in float64), and only the pairs whose order the bound leaves open are rescored in float64. The
  ranking is the float64 ranking of the normalised embeddings, ties included. The precision is the fastest the
  machine offers, measured once per process (:mod:`common.metrics.retrieval_precision`: bf16 on CPUs with native
  bf16, float32 on AVX2-only CPUs, fp16 or bf16 on GPUs). When the queries are the gallery, each tile of the upper
  triangle is scored once and counted for its row and its column queries (half the matmul);
* graded metrics on flat/hierarchical labels on CPU (``graded_engine="count"``,
  :mod:`common.metrics.retrieval_count`): dense scores in the embeddings' dtype by BLAS (so the ranking is the
  float32 one for float32 embeddings); the relevant items of a query are read off the label tree, and the number of
  irrelevant items scoring ``>=`` each of them comes from a histogram over a monotone cell map of the scores, with
  exact comparisons only inside the cells that hold a relevant score: ``O(N)`` per query instead of a row sort.
  Binary metrics are counted on the same scores;
* the same on other devices with torch (``graded_engine="tree"``: one row sort per query,
  :mod:`common.metrics.retrieval_tree`), and the multi-label case (``"generic"``: shared levels computed for every
  pair, :mod:`common.metrics.retrieval_dense`).

Duplicated gallery embeddings always tie exactly (the dense engines score distinct vectors once; the candidate
pass sums its float64 scores in a fixed order). faiss is not used: it returns a top-k list, and exact full-ranking
metrics need counts over the whole gallery; :mod:`common.metrics.knn` wraps faiss for kNN scorers.

Layout. This module holds the public API, the input checks, the choice of engine and the averaging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from common.metrics.relevance import label_kind
from common.metrics.retrieval_candidates import CandidateEngine, positive_pair_count
from common.metrics.retrieval_candidates import bf16_score_error_bound as bf16_score_error_bound
from common.metrics.retrieval_count import MAX_LEVELS, CountEngine
from common.metrics.retrieval_dense import DenseEngine
from common.metrics.retrieval_engine import RetrievalEngine, RetrievalProblem, torch_threads
from common.metrics.retrieval_precision import PRECISIONS, candidate_precision, precision_by_name
from common.metrics.retrieval_tree import TreeEngine

log = logging.getLogger(__name__)

__all__ = [
    "evaluate_retrieval",
    "retrieval_metrics",
    "choose_engine",
    "METRIC_NAMES",
    "BINARY_METRICS",
    "GRADED_METRICS",
    "CANDIDATE_PASSES",
    "GRADED_ENGINES",
]

BINARY_METRICS = ("recall", "precision_at_1", "r_precision", "map_at_r", "map")
GRADED_METRICS = ("ndcg", "hap", "asi")
METRIC_NAMES = BINARY_METRICS + GRADED_METRICS
CANDIDATE_PASSES = ("auto", "off", *PRECISIONS)  # "off": dense scores in the embeddings' dtype
GRADED_ENGINES = ("auto", "count", "tree", "generic")
_DENSE_CLASSES = 16  # "auto" scores densely when a query's positives average more than 1/16 of the gallery


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
    ``device`` is where the work runs (default: the embeddings' device; CUDA works). See the module docstring for
    formulas and the pessimistic tie rule.
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
    still count it at the finest level in the relevance denominators, as HAPPIER's evaluation does;
    set False to count only the gallery actually ranked. ``per_query=True`` adds ``per_query`` (a dict of float64
    tensors with NaN for skipped queries), for tests and analyses.

    ``candidate_pass`` (binary metrics without graded ones, integer labels): the precision of the candidate pass's
    matmul, ``"bf16"``, ``"fp16"``, ``"fp32"``, ``"tf32"`` (CUDA) or ``"fp64"``; every one gives the float64
    ranking (proven by the error bound, tested). ``"off"`` scores densely in the embeddings' dtype; ``"auto"`` runs
    the candidate pass in the precision that :func:`~common.metrics.retrieval_precision.candidate_precision`
    measured fastest on the device, or densely when the classes are very large.
    ``graded_engine`` (when a graded metric is asked for): ``"count"`` (CPU, flat or hierarchical labels: dense BLAS
    scores, relevant items from the label tree, cell-histogram counts; binary metrics from the same scores),
    ``"tree"`` (torch, any device: one row sort per query), ``"generic"`` (any labels, multi-label included; shared
    levels computed for every pair) or ``"auto"`` (count on CPU, tree elsewhere, generic for multi-label). All give
    the same values.
    """
    metrics = tuple(dict.fromkeys(metrics))
    _check_inputs(embeddings, labels, metrics, recall_at)
    _check_options(relevance, alpha, candidate_pass, graded_engine, chunk_size)
    problem = _problem(embeddings, labels, query_idx, gallery_idx, metrics, recall_at, exclude_self, device)
    problem.relevance, problem.alpha = relevance, alpha
    problem.count_self = exclude_self and count_self_in_relevance
    engine = choose_engine(problem, candidate_pass, graded_engine)
    return _summarise(engine.chunks(chunk_size), metrics, recall_at, per_query)


def choose_engine(
    problem: RetrievalProblem, candidate_pass: str = "auto", graded_engine: str = "auto"
) -> RetrievalEngine:
    """The engine for ``problem``: see :func:`retrieval_metrics` for the two options and the module docstring for
    what each engine does. Raises ``ValueError`` when a forced engine cannot handle the problem."""
    dev, kind = problem.device, problem.kind
    if graded_engine in ("count", "tree") and kind == "multilabel":
        raise ValueError(f"the {graded_engine} engine needs flat or hierarchical integer labels; use 'generic'")
    if graded_engine == "count" and dev.type != "cpu":
        raise ValueError("the count engine runs on CPU; use graded_engine='tree' on other devices")
    if graded_engine == "count" and problem.n_levels > MAX_LEVELS:
        raise ValueError(f"the count engine handles up to {MAX_LEVELS} levels; use graded_engine='tree'")
    if candidate_pass == "tf32" and dev.type != "cuda":
        raise ValueError("the tf32 candidate pass needs a CUDA device; use 'fp32' or 'bf16' on CPU")
    if problem.want_graded:
        if kind == "multilabel" or graded_engine == "generic":
            return DenseEngine(problem)
        if graded_engine == "count" or (
            graded_engine == "auto" and dev.type == "cpu" and problem.n_levels <= MAX_LEVELS
        ):
            return CountEngine(problem)
        return TreeEngine(problem)
    if kind == "multilabel" or candidate_pass == "off":
        return DenseEngine(problem)
    if candidate_pass != "auto":
        return CandidateEngine(problem, precision_by_name(candidate_pass, dev))
    lab = problem.binary_labels
    pairs = positive_pair_count(lab[problem.q_idx], lab[problem.g_idx])
    if pairs * _DENSE_CLASSES > problem.q_idx.numel() * max(problem.m, _DENSE_CLASSES * 64):
        return DenseEngine(problem)
    return CandidateEngine(problem, candidate_precision(dev).precision)


@dataclass
class _Acc:
    """Running sums over queries (float64)."""

    sums: dict[str, float] = field(default_factory=dict)
    n_binary: int = 0
    n_graded: int = 0
    skipped: int = 0
    skipped_graded: int = 0

    def add(self, out: dict[str, Tensor]) -> None:
        if "_has_pos" in out:
            has = out["_has_pos"]
            self.n_binary += int(has.sum())
            self.skipped += int((~has).sum())
        if "_has_rel" in out:
            has = out["_has_rel"]
            self.n_graded += int(has.sum())
            self.skipped_graded += int((~has).sum())
        for key, v in out.items():
            if not key.startswith("_"):
                self.sums[key] = self.sums.get(key, 0.0) + float(torch.nan_to_num(v, nan=0.0).double().sum())


def _check_inputs(embeddings: Tensor, labels: Tensor, metrics: Sequence[str], recall_at: Sequence[int]) -> None:
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ValueError("embeddings must be a floating-point tensor [N, D]")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(
            f"embeddings are empty (shape {tuple(embeddings.shape)}): there is nothing to rank; check that the "
            "evaluation loader yielded items and that the model returns features"
        )
    if not isinstance(labels, Tensor):
        raise ValueError("labels must be a tensor: int64 [N] or [N, L], or bool [N, C]")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels have {labels.shape[0]} rows but embeddings {embeddings.shape[0]}; pass one label per item"
        )
    label_kind(labels)
    lo, hi = embeddings.aminmax()  # one pass: NaN propagates, inf shows
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError("embeddings contain NaN or inf; check the model output (e.g. fp16 overflow) before evaluating")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
    if "recall" in metrics and (len(recall_at) == 0 or any(int(k) < 1 for k in recall_at)):
        raise ValueError(f"recall_at must be positive integers, got {list(recall_at)}")


def _check_options(relevance: str, alpha, candidate_pass: str, graded_engine: str, chunk_size: int | None) -> None:
    if relevance not in ("pop", "map"):
        raise ValueError(f"unknown relevance type {relevance!r}; use 'pop' or 'map'")
    if relevance == "map" and isinstance(alpha, (int, float)):
        raise ValueError("map relevance takes one weight per level as alpha, e.g. alpha=[1.0, 1.0]")
    if candidate_pass not in CANDIDATE_PASSES:
        raise ValueError(f"candidate_pass must be one of {list(CANDIDATE_PASSES)}, got {candidate_pass!r}")
    if graded_engine not in GRADED_ENGINES:
        raise ValueError(f"graded_engine must be 'auto', 'count', 'tree' or 'generic', got {graded_engine!r}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _as_index(idx: Tensor | Sequence[int] | None, n: int, name: str, device: torch.device) -> Tensor:
    if idx is None:
        return torch.arange(n, device=device)
    idx = torch.as_tensor(idx, device=device).long().flatten()
    if idx.numel() == 0:
        raise ValueError(f"{name} is empty: pass at least one index (or None for all {n} items)")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{name} must index the {n} embeddings, got values in [{int(idx.min())}, {int(idx.max())}]")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"{name} contains duplicate indices")
    return idx


def _problem(embeddings, labels, query_idx, gallery_idx, metrics, recall_at, exclude_self, device) -> RetrievalProblem:
    """Normalised embeddings and labels on the device, indices checked, the metrics split by kind."""
    dev = torch.device(device) if device is not None else embeddings.device
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    emb = embeddings.to(dev, dtype)
    norms = torch.linalg.vector_norm(emb, dim=1)
    if bool((norms == 0).any()):
        raise ValueError("an embedding is all zeros and has no direction; cosine similarity is undefined for it")
    n = emb.shape[0]
    return RetrievalProblem(
        emb=F.normalize(emb, dim=1),
        labels=labels.to(dev),
        q_idx=_as_index(query_idx, n, "query_idx", dev),
        g_idx=_as_index(gallery_idx, n, "gallery_idx", dev),
        exclude_self=exclude_self,
        want_binary=tuple(x for x in metrics if x in BINARY_METRICS),
        want_graded=tuple(x for x in metrics if x in GRADED_METRICS),
        recall_at=tuple(int(k) for k in recall_at),
    )


def _summarise(chunks: Iterable[dict[str, Tensor]], metrics, recall_at, per_query: bool) -> dict:
    """Average the per-query outputs over the queries that count; keys in the order the metrics were asked."""
    acc = _Acc()
    per_q: dict[str, list[Tensor]] = {}
    for out in chunks:
        with torch_threads(1):  # a few small reductions per chunk
            acc.add(out)
        if per_query:
            for key, v in out.items():
                per_q.setdefault(key, []).append(v)
    result: dict = {}
    for key, total in acc.sums.items():
        denom = acc.n_graded if key in GRADED_METRICS else acc.n_binary
        result[key] = total / denom if denom > 0 else float("nan")
    if any(x in BINARY_METRICS for x in metrics):
        result["num_skipped_queries"] = acc.skipped
        if acc.skipped:
            log.info("retrieval metrics: %d queries without a positive were left out", acc.skipped)
    if any(x in GRADED_METRICS for x in metrics):
        result["num_skipped_queries_graded"] = acc.skipped_graded
        if acc.skipped_graded:
            log.info("graded retrieval metrics: %d queries without a relevant item were left out", acc.skipped_graded)
    ordered = {k: result[k] for k in _result_keys(metrics, recall_at) if k in result}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    if per_query:
        ordered["per_query"] = {k: torch.cat(v) for k, v in per_q.items() if not k.startswith("_")}
    return ordered


def _result_keys(metrics: Sequence[str], recall_at: Sequence[int]) -> list[str]:
    names = {"precision_at_1": "precision@1", "r_precision": "r_precision", "map_at_r": "map@r", "map": "map"}
    keys: list[str] = []
    for x in metrics:
        if x == "recall":
            keys += [f"recall@{int(k)}" for k in recall_at]
        else:
            keys.append(names.get(x, x))
    return keys
