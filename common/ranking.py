"""Smooth-rank primitives shared by the rank losses (SupAP / ROADMAP, Smooth-AP, SupRecall, SupNDCG, Sup-H-AP).

Notation (docs/methods/roadmap.md#formulas): for a query ``q`` with reference set ``M`` (the batch or a memory) and
cosine scores ``s [Q, M]``, the rank of a reference item ``i`` is

    rank(i) = 1 + sum_{j != i} R(s_qj - s_qi),

where ``R`` is a step function: the Heaviside step ``H`` gives the exact rank, a sigmoid gives Smooth-AP's rank
(Brown et al. 2020, Eq. 5) and the piecewise upper bound ``H^-`` gives SupAP's rank (Ramzi et al. 2021, Eq. 4).

Memory. The original code builds the full ``Q x M x M`` difference tensor ``D[q, i, j] = s_qj - s_qi``. Rank losses
only need the ranks of a query's *positives* (AP, recall@k and NDCG are sums over positives), so this module works
on the list of ``P`` (query, positive) pairs and builds ``P x M`` differences. With m-per-class batches
``P = m * Q``, i.e. ``O(B^2)`` memory instead of ``O(B^3)``. ``chunk_size`` bounds it further to ``chunk x M``:
pairs are processed in chunks under activation checkpointing, so neither the forward nor the backward pass holds
more than one chunk of differences. Values are identical to the ``B^3`` formulation (tested).

Gradients. Heaviside parts carry no gradient (their output is computed on detached inputs), as in the original
code where H was written in place; the smooth steps are differentiable everywhere except at their kinks.

Stable API (other packages rely on these names and signatures; only add keyword arguments with defaults):
``heaviside``, ``tau_sigmoid``, ``sigmoid_step``, ``supap_step``, ``Heaviside``, ``Sigmoid``, ``SupAPStep``, ``LINEAR_MODES``,
``label_match``, ``shared_levels``, ``valid_reference_mask``, ``positive_pairs``, ``pairwise_rank_sums``,
``ap_ranks``, ``RankOutput``, ``average_precision_from_ranks``, ``per_query_mean``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = [
    "heaviside",
    "tau_sigmoid",
    "sigmoid_step",
    "supap_step",
    "Heaviside",
    "Sigmoid",
    "SupAPStep",
    "StepFn",
    "LINEAR_MODES",
    "label_match",
    "shared_levels",
    "valid_reference_mask",
    "positive_pairs",
    "pairwise_rank_sums",
    "ap_ranks",
    "RankOutput",
    "average_precision_from_ranks",
    "per_query_mean",
]

StepFn = Callable[[Tensor], Tensor]
LINEAR_MODES = ("x_minus_delta", "x")


# --------------------------------------------------------------------------------------------------------------
# Step functions. Input x = s_qj - s_qi (> 0 means j is scored above i). Output has x's shape.
# --------------------------------------------------------------------------------------------------------------
def heaviside(x: Tensor) -> Tensor:
    """Exact step ``H(x) = 1[x >= 0]`` (so ``H(0) = 1``), computed on ``x.detach()``: it carries no gradient."""
    x = x.detach()
    return torch.heaviside(x, torch.ones((), dtype=x.dtype, device=x.device))


def tau_sigmoid(x: Tensor, tau: float) -> Tensor:
    """``sigma(x / tau)`` with the argument clamped to [-50, 50] (the original ``tau_sigmoid``)."""
    return torch.sigmoid(torch.clamp(x / tau, -50.0, 50.0))


def sigmoid_step(x: Tensor, tau: float = 0.01) -> Tensor:
    """Smooth-AP's step ``R(x) = sigma(x / tau)`` (Brown et al. 2020, Eq. 5; tau = 0.01)."""
    return tau_sigmoid(x, tau)


def supap_step(x: Tensor, **params) -> Tensor:
    """``SupAPStep(**params)(x)``: the function form of :class:`SupAPStep` (same arguments, same defaults)."""
    return SupAPStep(**params)(x)


class Heaviside:
    """Callable form of :func:`heaviside` (for configs)."""

    def __call__(self, x: Tensor) -> Tensor:
        return heaviside(x)

    def __repr__(self) -> str:
        return "Heaviside()"


class Sigmoid:
    """Callable form of :func:`sigmoid_step`."""

    def __init__(self, tau: float = 0.01) -> None:
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def __call__(self, x: Tensor) -> Tensor:
        return sigmoid_step(x, self.tau)

    def __repr__(self) -> str:
        return f"Sigmoid(tau={self.tau})"


@dataclass(frozen=True)
class SupAPStep:
    """SupAP's upper bound ``H^-`` of the Heaviside step on negatives (ROADMAP, Ramzi et al. 2021, Eq. 4).

        H^-(x) = sigma(x / tau_n)                 x <= 0
               = start + sigma(x / tau_p)         0 < x <= delta
               = rho * (x - delta) + offset       x > delta     (linear_mode="x_minus_delta", code after PR #13)
               = rho * x + offset                 x > delta     (linear_mode="x", the NeurIPS-era code)

    The one object that every SupAP-type loss takes (``SupAP``, ``SupRecall``, ``SupNDCG``, ``SupHAP``: argument
    ``step``), with the one set of defaults. The defaults are the values of the ROADMAP SOP/CUB and HAPPIER paper
    configs (tau 0.01, rho 100, delta 0.05, start 0.5, offset 1.44, the current linear branch); the iNat configs
    use ``start=0.0, offset=1.0``; the NeurIPS rows ``linear_mode="x"``.

    Args:
        tau: temperature, or a pair ``(tau_n, tau_p)`` for x <= 0 and x > 0 (the original ``"taun_taup"``).
        delta: end of the sigmoid part; ``None`` means the linear branch starts at 0: ``rho * x + offset`` for x > 0.
        offset: value of the linear branch at its start; ``None`` makes it continuous:
            ``sigma(delta / tau_p) + start`` (``0.5 + start`` when ``delta`` is None), the original class default,
            which no paper config uses.
        linear_mode: ``"x_minus_delta"`` (current code, the paper's Eq. 4) or ``"x"`` (pre-fix code).

    With ``start >= 0.5`` and ``offset >= 1`` this is >= H(x) for every x != 0, hence rank^- >= rank.
    """

    tau: float | tuple[float, float] = 0.01
    rho: float = 100.0
    delta: float | None = 0.05
    start: float = 0.5
    offset: float | None = 1.44
    linear_mode: str = "x_minus_delta"

    def __post_init__(self) -> None:
        if self.linear_mode not in LINEAR_MODES:
            raise ValueError(f"linear_mode must be one of {LINEAR_MODES}, got {self.linear_mode!r}")
        tau = float(self.tau) if isinstance(self.tau, (int, float)) else tuple(float(t) for t in self.tau)
        if any(t <= 0 for t in (tau if isinstance(tau, tuple) else (tau,))):
            raise ValueError(f"tau must be > 0, got {self.tau}")
        object.__setattr__(self, "tau", tau)  # a YAML list arrives as a ListConfig: store plain floats

    def __call__(self, x: Tensor) -> Tensor:
        tau_n, tau_p = self.tau if isinstance(self.tau, tuple) else (self.tau, self.tau)
        offset = self.offset
        if offset is None:
            offset = (_sigmoid(self.delta / tau_p) if self.delta is not None else 0.5) + self.start
        neg_part = tau_sigmoid(x, tau_n)
        if self.delta is None:
            return torch.where(x <= 0, neg_part, self.rho * x + offset)
        mid_part = self.start + tau_sigmoid(x, tau_p)
        if self.linear_mode == "x_minus_delta":
            linear = self.rho * (x - self.delta) + offset
        else:
            linear = self.rho * x + offset
        return torch.where(x <= 0, neg_part, torch.where(x <= self.delta, mid_part, linear))


def _sigmoid(z: float) -> float:
    """``sigma(z)`` of a Python float with the argument clamped to [-50, 50], like :func:`tau_sigmoid`."""
    return 1.0 / (1.0 + math.exp(-min(max(z, -50.0), 50.0)))


# --------------------------------------------------------------------------------------------------------------
# Label relations
# --------------------------------------------------------------------------------------------------------------
def label_match(q_labels: Tensor, ref_labels: Tensor) -> Tensor:
    """``[Q, M]`` bool: ``q_labels[q] == ref_labels[j]``. Labels ``[N]``, or ``[N, L]`` (column 0 is used)."""
    if q_labels.ndim == 2:
        q_labels = q_labels[:, 0]
    if ref_labels.ndim == 2:
        ref_labels = ref_labels[:, 0]
    return q_labels[:, None] == ref_labels[None, :]


def shared_levels(q_labels: Tensor, ref_labels: Tensor) -> Tensor:
    """``[Q, M]`` int64: number of hierarchy levels ``l`` at which q and j share a node (0..L).

    Labels are ``[N, L]`` with column 0 the finest level (docs/codebase.md#label-conventions); ``[N]`` counts as
    L=1. Sharing level ``l`` requires columns ``l..L-1`` (that level and every coarser one) to match, so a tree is
    implied. For nested hierarchies this equals HAPPIER's target matrix ("number of levels at which q and j share a
    label").
    """
    if q_labels.ndim == 1:
        q_labels = q_labels[:, None]
    if ref_labels.ndim == 1:
        ref_labels = ref_labels[:, None]
    eq = q_labels[:, None, :] == ref_labels[None, :, :]  # [Q, M, L]
    # cumulative product from the coarsest column down: level l counts only if all coarser levels match too
    return torch.cumprod(eq.flip(2).long(), dim=2).sum(dim=2)


def valid_reference_mask(num_queries: int, num_refs: int, exclude_self: bool, device=None) -> Tensor:
    """``[Q, M]`` bool of the references a query may rank: all, or all but ``j == q`` (in-batch, ``exclude_self``)."""
    valid = torch.ones(num_queries, num_refs, dtype=torch.bool, device=device)
    if exclude_self:
        n = min(num_queries, num_refs)
        idx = torch.arange(n, device=device)
        valid[idx, idx] = False
    return valid


def positive_pairs(pos_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices ``(q_idx [P], i_idx [P])`` of the True entries of ``pos_mask [Q, M]``, in row-major order."""
    q_idx, i_idx = pos_mask.nonzero(as_tuple=True)
    return q_idx, i_idx


# --------------------------------------------------------------------------------------------------------------
# Rank sums over (query, item) pairs
# --------------------------------------------------------------------------------------------------------------
PairFn = Callable[[Tensor, Tensor, Tensor, Tensor], Sequence[Tensor]]


def pairwise_rank_sums(
    scores: Tensor,
    q_idx: Tensor,
    i_idx: Tensor,
    fn: PairFn,
    chunk_size: int | None = None,
    use_checkpoint: bool | None = None,
) -> tuple[Tensor, ...]:
    """Apply ``fn`` to the score differences of each (query, item) pair, chunk by chunk.

    For every pair p = (q_idx[p], i_idx[p]) the difference row is ``diff[p, j] = scores[q, j] - scores[q, i]``
    (``[P, M]``). ``fn(diff [c, M], q_c [c], i_c [c], not_i [c, M])`` receives one chunk, where ``not_i`` masks out
    ``j == i``, and returns a sequence of ``[c]`` tensors (e.g. rank sums). The per-chunk outputs are concatenated.

    Memory: ``chunk_size=None`` processes all ``P`` pairs at once (``P x M`` per intermediate). With a chunk size,
    each chunk runs under activation checkpointing when gradients are needed, so peak memory is ``O(chunk x M)``
    in the forward *and* the backward pass (at the price of recomputing ``fn`` in the backward).
    ``fn`` must be deterministic for checkpointing to be exact.
    """
    num_pairs, num_refs = q_idx.numel(), scores.shape[1]
    ref_range = torch.arange(num_refs, device=scores.device)

    def run(s: Tensor, qc: Tensor, ic: Tensor) -> tuple[Tensor, ...]:
        rows = s[qc]  # [c, M]
        diff = rows - rows.gather(1, ic[:, None])  # [c, M]: s_qj - s_qi
        not_i = ref_range[None, :] != ic[:, None]
        return tuple(fn(diff, qc, ic, not_i))

    if chunk_size is None or chunk_size >= num_pairs:
        return run(scores, q_idx, i_idx)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    if use_checkpoint is None:
        use_checkpoint = torch.is_grad_enabled() and scores.requires_grad
    outs: list[tuple[Tensor, ...]] = []
    for start in range(0, num_pairs, chunk_size):
        qc, ic = q_idx[start : start + chunk_size], i_idx[start : start + chunk_size]
        if use_checkpoint:
            outs.append(_checkpoint(run, scores, qc, ic, use_reentrant=False))
        else:
            outs.append(run(scores, qc, ic))
    if not outs:
        empty = scores.new_zeros(0)
        probe = run(scores, q_idx[:0], i_idx[:0])
        return tuple(empty for _ in probe)
    return tuple(torch.cat(parts) for parts in zip(*outs))


@dataclass
class RankOutput:
    """Ranks of each (query, positive) pair. ``q_idx``, ``i_idx``, ``rank``, ``rank_pos`` are all ``[P]``."""

    q_idx: Tensor
    i_idx: Tensor
    rank: Tensor  # 1 + sum_{j valid, j != i} R(s_qj - s_qi)
    rank_pos: Tensor  # 1 + sum_{j valid positive, j != i} R+(s_qj - s_qi)
    num_queries: int


def ap_ranks(
    scores: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    neg_step: StepFn = heaviside,
    pos_step: StepFn = heaviside,
    rank_pos_step: StepFn | None = None,
    chunk_size: int | None = None,
) -> RankOutput:
    """Ranks of every positive among all valid references and among the positives (AP's two ranks).

        rank(i)   = 1 + sum_{j valid, j != i} [pos_qj * pos_step(s_qj - s_qi) + neg_qj * neg_step(s_qj - s_qi)]
        rank+(i)  = 1 + sum_{j valid, pos_qj, j != i} rank_pos_step(s_qj - s_qi)

    Args:
        scores: ``[Q, M]`` similarities of queries to references.
        pos_mask: ``[Q, M]`` bool, True where j is a positive of q. Only valid positives get a rank.
        valid_mask: ``[Q, M]`` bool of the references that take part (e.g. False on the diagonal to exclude the
            query from its own ranking); ``None`` = all.
        neg_step / pos_step: step functions for negatives / positives in ``rank``. SupAP: ``SupAPStep()`` /
            ``heaviside``; Smooth-AP: ``Sigmoid()`` for both; exact AP: ``heaviside`` for both.
        rank_pos_step: step in ``rank+`` (defaults to ``pos_step``).
        chunk_size: see :func:`pairwise_rank_sums`.
    """
    if scores.shape != pos_mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and pos_mask {tuple(pos_mask.shape)} must have the same shape")
    rank_pos_step = pos_step if rank_pos_step is None else rank_pos_step
    pos = pos_mask.bool()
    valid = torch.ones_like(pos) if valid_mask is None else valid_mask.bool()
    pos = pos & valid
    neg = ~pos_mask.bool() & valid
    q_idx, i_idx = positive_pairs(pos)

    def fn(diff: Tensor, qc: Tensor, ic: Tensor, not_i: Tensor) -> tuple[Tensor, Tensor]:
        p = pos[qc] & not_i  # [c, M]
        n = neg[qc]  # [c, M] (i is a positive, so never in n)
        zero = diff.new_zeros(())
        pos_terms = torch.where(p, pos_step(diff), zero)
        rank = 1.0 + (torch.where(n, neg_step(diff), zero) + pos_terms).sum(1)
        rank_pos = 1.0 + (pos_terms if rank_pos_step is pos_step else torch.where(p, rank_pos_step(diff), zero)).sum(1)
        return rank, rank_pos

    rank, rank_pos = pairwise_rank_sums(scores, q_idx, i_idx, fn, chunk_size=chunk_size)
    return RankOutput(q_idx, i_idx, rank, rank_pos, scores.shape[0])


def per_query_mean(values: Tensor, q_idx: Tensor, num_queries: int) -> tuple[Tensor, Tensor]:
    """Mean of ``values [P]`` per query: returns ``(mean [Q], count [Q])``; queries with count 0 get 0."""
    total = values.new_zeros(num_queries).index_add(0, q_idx, values)
    count = torch.bincount(q_idx, minlength=num_queries).to(values.dtype)
    return total / count.clamp(min=1), count


def average_precision_from_ranks(ranks: RankOutput) -> tuple[Tensor, Tensor]:
    """``AP_q = (1/|P_q|) sum_{i in P_q} rank+(i) / rank(i)`` (ROADMAP Eq. 2). Returns ``(ap [Q], has_pos [Q])``."""
    ap, count = per_query_mean(ranks.rank_pos / ranks.rank, ranks.q_idx, ranks.num_queries)
    return ap, count > 0
