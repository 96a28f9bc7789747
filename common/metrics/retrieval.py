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

A query without a positive (binary) or without any relevant item (graded) is left out of the average; the counts
are returned as ``num_skipped_queries`` and ``num_skipped_queries_graded``.

How it is computed (all exact, no kNN cut; memory ``O(chunk x N)``):

* binary metrics only, float32 embeddings on CPU: a bfloat16 score pass finds, per query, the few gallery items
  that can precede a positive within the needed depth, and rescores them and the positives in float64 (error bound
  in :func:`bf16_score_error_bound`, tested); the ranking is the float64 ranking of the normalised embeddings;
* graded metrics on flat/hierarchical labels: dense scores in the embeddings' dtype, one sorted copy per query row;
  relevant items are read from the label tree (:class:`_TreeRanker`) and binary metrics from the same sorted rows;
* otherwise (multi-label, other devices): dense scores with shared levels computed for every pair.

Duplicated gallery embeddings are scored once and expanded, so they always tie exactly (BLAS kernels may otherwise
round identical columns differently). faiss is not used: it returns a top-k list, and exact full-ranking metrics
need counts over the whole gallery; :mod:`common.metrics.knn` wraps faiss for kNN scorers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
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
_ELEMS_PER_CHUNK = 1 << 23  # default chunk: about 8M query x gallery scores


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

    ``candidate_pass``: ``"bf16"`` computes binary metrics from a bfloat16 score pass and rescores exactly (float64)
    every negative that could rank above a positive (see :func:`_bf16_binary_chunk`; the result is the float64
    ranking, proven by the error bound and tested); ``"off"`` scores in the embeddings' dtype; ``"auto"`` uses
    bf16 on CPU for float32 embeddings when only binary metrics on integer labels are asked for.
    ``graded_engine``: ``"tree"`` (flat or hierarchical labels: relevant items gathered from the label tree, one row
    sort per query, binary metrics read off the same sorted rows), ``"generic"`` (any labels, multi-label included;
    shared levels computed for every pair) or ``"auto"`` (tree when possible). Both give the same values.
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
    n_lv = num_levels(labels)

    if chunk_size is None:
        chunk_size = max(1, _ELEMS_PER_CHUNK // (m * (4 if want_graded else 1)))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    if candidate_pass not in ("auto", "bf16", "off"):
        raise ValueError(f"candidate_pass must be 'auto', 'bf16' or 'off', got {candidate_pass!r}")
    use_bf16 = candidate_pass == "bf16" or (
        candidate_pass == "auto" and dev.type == "cpu" and dtype == torch.float32 and m >= 4096
    )
    if graded_engine not in ("auto", "tree", "generic"):
        raise ValueError(f"graded_engine must be 'auto', 'tree' or 'generic', got {graded_engine!r}")
    if graded_engine == "tree" and kind == "multilabel":
        raise ValueError("the tree engine needs flat or hierarchical integer labels; use graded_engine='generic'")
    tree = (
        _TreeRanker(labels, g_idx, gal_pos)
        if want_graded and kind != "multilabel" and graded_engine in ("auto", "tree")
        else None
    )
    use_bf16 = use_bf16 and bool(want_binary) and kind != "multilabel" and tree is None
    fast = _Bf16Binary(emb, binary_labels, g_idx, gal_pos, gallery) if use_bf16 else None

    acc = _Acc()
    per_q: dict[str, list[Tensor]] = {}
    for start in range(0, q_idx.numel(), chunk_size):
        qi = q_idx[start : start + chunk_size]
        c = qi.numel()
        out: dict[str, Tensor] = {}
        dense: tuple[Tensor, Tensor] | None = None
        if tree is not None:
            self_pos = gal_pos[qi] if exclude_self else torch.full_like(qi, -1)
            scores, _ = _dense_scores(emb[qi], gallery, self_pos)
            srt = _sort_rows(scores)
            if want_binary:
                out.update(tree.binary(scores, srt, qi, self_pos, want_binary, recall_at))
            count_self = exclude_self and count_self_in_relevance
            out.update(tree.graded(scores, srt, qi, self_pos, relevance, alpha, count_self, want_graded))
            _accumulate(acc, out)
            if per_query:
                for key, v in out.items():
                    per_q.setdefault(key, []).append(v)
            continue
        if want_binary:
            fast_out = fast.chunk(qi, exclude_self, want_binary, recall_at) if fast is not None else None
            if fast_out is None:  # dense scores in the embeddings' dtype
                # dense float64 scores when the bf16 pass declined (same float64 ranking), else the input dtype
                g = gallery if fast is None else fast.gallery64
                scores, valid = _dense_scores(emb[qi], g, gal_pos[qi] if exclude_self else None)
                dense = (scores, valid) if fast is None else None
                pos = _binary_positive(binary_labels[qi], binary_labels[g_idx], kind) & valid
                fast_out = _binary_metrics_from_scores(scores, pos, want_binary, recall_at)
            out.update(fast_out)
        if want_graded:
            scores, valid = (
                dense if dense is not None else _dense_scores(emb[qi], gallery, gal_pos[qi] if exclude_self else None)
            )
            levels = shared_levels(labels[qi], labels[g_idx]).masked_fill(~valid, 0)  # [C, M]
            extra = None
            if exclude_self and count_self_in_relevance and kind != "multilabel":
                extra = torch.zeros(c, n_lv + 1, dtype=torch.float64, device=dev)
                extra[:, n_lv] = (gal_pos[qi] >= 0).double()  # the query itself, at the finest level
            table = relevance_table(levels, n_lv, relevance, alpha, valid, extra)  # [C, T+1]
            out.update(_graded_metrics(scores, levels, valid, table, n_lv, want_graded))
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


def bf16_score_error_bound(dim: int) -> float:
    """Bound on ``|s_bf16 - s|`` for the cosine of two unit vectors of dimension ``dim`` scored by a bf16 matmul.

    Rounding both inputs to bf16 moves each product by at most ``(2u + u^2)|x_i y_i|`` and ``sum |x_i y_i| <= 1``
    (Cauchy-Schwarz); fp32 accumulation adds at most ``gamma_d = d u32 / (1 - d u32)`` times ``sum |x^_i y^_i|``
    (recursive-summation worst case, any order); rounding the output to bf16 adds ``u |s^|``. A 1e-5 slack covers
    fp32 normalisation (norms 1 +- 1e-6) and flushed subnormals.
    """
    u = _BF16_U
    gamma = dim * _FP32_U / (1.0 - dim * _FP32_U)
    inputs = 2.0 * u + u * u
    acc = (1.0 + u) ** 2 * gamma
    s_max = (1.0 + u) ** 2 * (1.0 + gamma)
    return inputs + acc + u * s_max + 1e-5


def _bf16_floor(x: Tensor) -> Tensor:
    """A bf16 value ``<= x`` for every float64 ``x`` (round-to-nearest moves by at most 2^-8 |x|)."""
    return (x - x.abs() * 2.0**-7 - 1e-30).to(torch.bfloat16)


class _Bf16Binary:
    """Binary metrics of a query chunk from a bf16 candidate pass plus exact float64 rescoring.

    For a query with exact positive scores ``p_1 >= ... >= p_R`` only negatives with exact score ``>= p_R`` change a
    position. With ``eps`` = :func:`bf16_score_error_bound` (``|bf16 score - exact| <= eps``), such a negative has a
    bf16 score ``>= p_R - eps >= bf16(p_R) - 2 eps``; every gallery item above that bar is rescored in float64 (one
    matmul per block of rows against the union of its candidate columns, positives included, so identical pairs get
    identical scores). The counts ``n_i`` are therefore those of the float64 ranking of the L2-normalised float32
    embeddings, ties included (pessimistic). Without ``map``, the bar is raised to ``v_K - 2 eps`` (see
    :meth:`chunk`). When a chunk has too many candidates to be worth it (poor embeddings), :meth:`chunk` returns
    None and the caller scores that chunk densely in float32 instead.
    """

    def __init__(self, emb: Tensor, binary_labels: Tensor, g_idx: Tensor, gal_pos: Tensor, gallery: _Gallery) -> None:
        self.emb, self.labels, self.gal_pos = emb, binary_labels, gal_pos
        self.gal = emb[g_idx]
        # distinct-vector id of every gallery item: pairs are rescored once per (query, distinct vector)
        self.uid = gallery.inv if gallery.inv is not None else torch.arange(self.gal.shape[0], device=emb.device)
        self.gallery64 = _Gallery64(gallery)
        n_uid = int(self.uid.max()) + 1 if self.uid.numel() else 0
        self.first_of_uid = torch.zeros(max(n_uid, 1), dtype=torch.long, device=emb.device)
        self.first_of_uid[self.uid] = torch.arange(self.gal.shape[0], device=emb.device)  # a representative
        self.gal_bf = self.gal.to(torch.bfloat16)
        self.g_lab = binary_labels[g_idx]
        order = torch.argsort(self.g_lab, stable=True)
        self.order = order
        self.uniq, self.counts = torch.unique_consecutive(self.g_lab[order], return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts
        self.eps = bf16_score_error_bound(emb.shape[1])
        self.extra_top = 32

    def chunk(
        self, qi: Tensor, exclude_self: bool, wanted: Sequence[str], recall_at: Sequence[int]
    ) -> dict[str, Tensor] | None:
        dev = qi.device
        c, m = qi.numel(), self.gal.shape[0]
        ql = self.labels[qi]
        k = torch.searchsorted(self.uniq, ql).clamp(max=self.uniq.numel() - 1)
        cnt = torch.where(self.uniq[k] == ql, self.counts[k], 0)
        p_max = max(int(cnt.max()), 1)
        ar = torch.arange(p_max, device=dev)
        slot = ar[None, :] < cnt[:, None]  # [C, P]
        members = self.order[(self.starts[k][:, None] + ar[None, :]).clamp(max=m - 1)]  # gallery positions
        self_pos = self.gal_pos[qi] if exclude_self else torch.full_like(qi, -1)
        slot &= members != self_pos[:, None]
        q = self.emb[qi]
        npos = slot.sum(1)
        scores_bf = q.to(torch.bfloat16) @ self.gal_bf.T  # [C, M] bf16
        if exclude_self:
            has_self = self_pos >= 0
            scores_bf[torch.arange(c, device=dev)[has_self], self_pos[has_self]] = -math.inf
        # exact p_R >= (bf16 p_R) - eps, so every negative scoring >= p_R has a bf16 score >= (bf16 p_R) - 2 eps
        approx_pos = torch.where(slot, scores_bf.gather(1, members).double(), math.inf)
        bar = torch.where(npos > 0, approx_pos.min(1).values - 2.0 * self.eps, math.inf)  # [C] float64
        if "map" not in wanted:
            # Only positions <= K matter (K = R, or the largest recall cut-off): with v_K the K-th largest bf16
            # score, at least K items score >= v_K - eps exactly, so items below v_K - 2 eps are never in the top K
            # and cannot move a position <= K (a position > K stays > K, which is all these metrics need).
            depth = npos.clone()
            if "recall" in wanted:
                depth = depth.clamp(min=max(int(k) for k in recall_at))
            depth = depth.clamp(max=m - int(exclude_self)).clamp(min=1)
            k_top = min(int(depth.max()) + self.extra_top, m)
            top = torch.topk(scores_bf, k_top, dim=1)  # candidates are almost always inside this list
            top_v = top.values.double()  # [C, K'] (exact: bf16 -> float64)
            v_k = top_v.gather(1, (depth - 1)[:, None])[:, 0]
            bar = torch.maximum(bar, v_k - 2.0 * self.eps)
            inside = top_v >= bar[:, None]
            overflow = inside[:, -1] & (k_top < m)  # the list may have cut candidates off: scan those rows
            inside &= ~overflow[:, None]
            rows, k_idx = inside.nonzero(as_tuple=True)
            cols = top.indices[rows, k_idx]
            if overflow.any():
                o_rows = overflow.nonzero()[:, 0]
                r2, c2 = (scores_bf[o_rows] >= _bf16_floor(bar[o_rows])[:, None]).nonzero(as_tuple=True)
                rows, cols = torch.cat([rows, o_rows[r2]]), torch.cat([cols, c2])
        else:
            rows, cols = (scores_bf >= _bf16_floor(bar)[:, None]).nonzero(as_tuple=True)
        if rows.numel() > c * m // 16:
            return None
        keep = self.g_lab[cols] != ql[rows]  # negatives (self has a -inf bf16 score)
        rows, cols = rows[keep], cols[keep]
        # positives below the bar cannot be in the top K (K-limited metrics) or have nothing above them to count
        # beyond the candidates (map: the bar is below every positive), so only the others need an exact score
        rescore = slot & (approx_pos >= bar.double()[:, None])
        rows_p, slot_p = rescore.nonzero(as_tuple=True)
        # exact float64 rescoring of positives and candidate negatives in one call, so identical pairs get
        # bit-identical scores
        all_rows = torch.cat([rows, rows_p])
        all_cols = torch.cat([cols, members[rows_p, slot_p]])
        key = all_rows * m + self.uid[all_cols]  # one rescoring per (query, distinct gallery vector)
        ukey, kinv = torch.unique(key, return_inverse=True)
        u_rows, u_cols = ukey // m, self.first_of_uid[ukey % m]
        exact = torch.einsum("ij,ij->i", q[u_rows].double(), self.gal[u_cols].double())[kinv]
        neg_exact = exact[: rows.numel()]
        pos_exact = torch.full((c, p_max), -math.inf, dtype=torch.float64, device=dev)
        pos_exact[rows_p, slot_p] = exact[rows.numel() :]
        pos_sorted = torch.sort(pos_exact, dim=1, descending=True).values  # [C, P], real ones first
        n_neg = torch.zeros(c, p_max, dtype=torch.long, device=dev)
        n_neg.index_add_(0, rows, (neg_exact[:, None] >= pos_sorted[rows]).long())
        # positives not rescored rank last among positives, beyond position K: push them past every cut-off
        i = torch.arange(p_max, device=dev)[None, :]
        n_neg = torch.where(i >= rescore.sum(1, keepdim=True), m, n_neg)
        return _binary_metrics(npos, n_neg, wanted, recall_at)


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
