"""The candidate pass for binary metrics: one low-precision matmul, a proven error bound, exact float64 rescoring.

:class:`CandidateEngine` computes ``recall@k``, ``precision@1``, ``r_precision``, ``map@r`` and ``map`` (formulas
and tie rule in :mod:`common.metrics.retrieval`) for integer labels on any device. The result is the ranking by the
float64 scores of the normalised embeddings (:func:`exact_scores`), ties included, whatever the precision of the
matmul (:mod:`common.metrics.retrieval_precision` picks the fastest one the hardware offers).

What is counted. For a query with positives ``p_1 <= ... <= p_R`` (exact scores, ascending), the metrics need, for
each positive, ``n_i`` = the number of negatives scoring ``>= p_i`` (pessimistic ties). ``n_i`` is a sum over the
gallery, so it adds up over gallery blocks, and each negative only needs to be placed among the R exact positive
scores, not ranked against the other negatives.

Error bound. Let ``x, y`` be the normalised query and gallery vectors, ``s = x.y``, ``x^, y^`` their roundings to the
matmul's input format, ``b`` the matmul's output. ``|x^.y^ - s| <= e_x |y^| + |x| e_y`` (Cauchy-Schwarz, ``e_x =
|x^ - x|`` measured per vector), the accumulation adds at most ``gamma_d |x^| |y^|`` with ``gamma_d = d u_acc /
(1 - d u_acc)`` (any summation order; products of the input format are exact in the float32 accumulator), and the
output rounding ``u_out |b| + a_out``. With ``D(b) = b - u_out |b|``, ``U(b) = b + u_out |b|`` (both increasing) and,
per query, ``E = e_q max|y^| + |q| max e_y + gamma_d |q^| max|y^| + a_out + d 2^-52`` (the last term covers the
float64 evaluation of the reference scores, whose own error is at most ``log2(d) 2^-53``), every pair satisfies
``D(b) - E <= s64 <= U(b) + E`` where ``s64`` is the float64 reference score.

Classification. Per positive, two thresholds in the matmul's output scale: ``a_i = D^-1(p_i + E)`` (a negative with
``b >= a_i`` scores ``>= p_i`` for certain) and ``c_i = U^-1(p_i - E)`` (``b < c_i``: below ``p_i`` for certain), each
rounded outward to float32. A negative's ``b`` is compared with the ``a`` and ``c`` of its query by one binary search
each over packed ``(query, float32 order key)`` integers: if both give the same count ``k``, the negative is above
exactly the ``k`` lowest positives (settled); otherwise its float64 score is computed and compared with the positives
in between (ambiguous). Gallery items below ``c_1`` (the lowest positive's) are below every positive and are never
extracted: that one comparison per score, on the raw output bits for 16-bit formats, is the only pass over the
``Q x M`` scores besides the matmul.

Depth. Metrics other than ``map`` only look at positions ``<= K`` (``K = R`` for R-precision and MAP@R, the largest
cut-off for recall, 1 for P@1). The positive of descending rank ``r`` sits at position ``r + n``: once the negatives
known for certain to be above it make that ``> K``, it and every lower positive are out of reach (placed after the
whole gallery), and the query's extraction threshold rises to the ``c`` of its lowest positive still in reach (to
``+inf`` once none is). This is updated after every block, so poor embeddings (positives deep in the ranking) do not
flood the pass with candidates. Ambiguous negatives whose open range of positives is entirely out of reach are not
rescored.

All-vs-all (the queries are the gallery). ``s(i, j) = s(j, i)``, so the gallery is cut into blocks and each tile
``(I, J)`` with ``J >= I`` is scored once: its entries are extracted for the row queries (threshold per row) and, off
the diagonal, for the column queries (threshold per column). Half the matmul, still exact: the same bound holds for
the one score that stands for both orders, and the float64 reference ``x.y`` is symmetric. Query block ``I`` has all
of its counts once its tile row is done, and is finished then.

Exact ties. The float64 scores (:func:`exact_scores`) are computed elementwise with a fixed pairwise summation tree,
so identical vectors get bit-identical scores wherever they sit (BLAS kernels may round identical columns
differently), on CPU and CUDA alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from common.metrics.retrieval_dense import binary_metrics
from common.metrics.retrieval_engine import RetrievalEngine, RetrievalProblem, torch_threads, worker_pool
from common.metrics.retrieval_precision import Precision, lp_matmul

__all__ = [
    "CandidateEngine",
    "exact_scores",
    "score_error_bound",
    "bf16_score_error_bound",
    "positive_pair_count",
    "tile_plan",
]

_F32_U = 2.0**-24
_MARGIN = 2.0**-48  # relative slack on the float64 threshold arithmetic (far above its rounding, far below E)
_SCAN_ELEMS = 1 << 21  # scores per row slice of a tile scanned by one worker
_CLASSIFY_BATCH = 1 << 21  # candidates classified at once (bounds memory on poor embeddings)
_EXACT_BATCH = 1 << 24  # float64 products per batch of exact scores (CUDA)
_EXACT_BATCH_CPU = 1 << 17  # on CPU: 1 MB batches that stay in cache
_TILE = 4096  # largest tile side
_FINISH_ELEMS = 1 << 22  # (queries x positives) per finishing batch


def bf16_score_error_bound(dim: int) -> float:
    """Bound on ``|s_bf16 - s|`` for the cosine of two unit vectors of dimension ``dim`` scored by a bf16 matmul.

    Rounding both inputs to bf16 moves each product by at most ``(2u + u^2)|x_i y_i|`` and ``sum |x_i y_i| <= 1``
    (Cauchy-Schwarz); fp32 accumulation adds at most ``gamma_d = d u32 / (1 - d u32)`` times ``sum |x^_i y^_i|``
    (recursive-summation worst case, any order); rounding the output to bf16 adds ``u |s^|``. A 1e-5 slack covers
    fp32 normalisation (norms 1 +- 1e-6) and flushed subnormals. This is the worst case over all vectors; the
    candidate pass uses the tighter per-vector bound of :class:`CandidateEngine`.
    """
    return score_error_bound(dim, 2.0**-8, 2.0**-8)


def score_error_bound(dim: int, u_in: float, u_out: float, u_acc: float = _F32_U) -> float:
    """Worst-case ``|b - s|`` for unit vectors of dimension ``dim``: inputs rounded with unit ``u_in``, products
    accumulated with unit ``u_acc``, output rounded with unit ``u_out`` (see :func:`bf16_score_error_bound`)."""
    gamma = dim * u_acc / (1.0 - dim * u_acc)
    inputs = 2.0 * u_in + u_in * u_in
    acc = (1.0 + u_in) ** 2 * gamma
    s_max = (1.0 + u_in) ** 2 * (1.0 + gamma)
    return inputs + acc + u_out * s_max + 1e-5


def exact_scores(
    a: Tensor, ia: Tensor, b: Tensor, ib: Tensor, use_numpy: bool | None = None, workers: int | None = None
) -> Tensor:
    """float64 ``a[ia[k]] . b[ib[k]]`` for every k, summed in a fixed pairwise tree.

    Elementwise float64 products (exact for float32 inputs), zero-padded to a power of two, then halved ``log2 d``
    times in place: the result depends only on the two vectors, so duplicated embeddings tie exactly, and numpy
    (``use_numpy``, the default on CPU: cache-sized batches over ``workers`` threads) and torch give the same bits.
    """
    n, d = ia.numel(), a.shape[1]
    width = 1 << max(0, (d - 1).bit_length())
    cpu = a.device.type == "cpu" if use_numpy is None else use_numpy
    step = max(1, (_EXACT_BATCH_CPU if cpu else _EXACT_BATCH) // width)
    if cpu:
        a_np, b_np, ia_np, ib_np = a.numpy(), b.numpy(), ia.numpy(), ib.numpy()
        out = np.empty(n, dtype=np.float64)

        def run(span: tuple[int, int]) -> None:
            k0 = min(step, span[1] - span[0])
            prod, other = np.zeros((k0, width)), np.empty((k0, d))
            rows_a, rows_b = np.empty((k0, d), dtype=a_np.dtype), np.empty((k0, d), dtype=b_np.dtype)
            for s in range(span[0], span[1], step):
                k = min(step, span[1] - s)
                p = prod[:k]
                np.take(a_np, ia_np[s : s + k], axis=0, out=rows_a[:k])  # gather, then cast: faster than a
                np.take(b_np, ib_np[s : s + k], axis=0, out=rows_b[:k])  # mixed-dtype multiply
                p[:, :d] = rows_a[:k]
                other[:k] = rows_b[:k]
                np.multiply(p[:, :d], other[:k], out=p[:, :d])
                h = width
                while h > 1:
                    h //= 2
                    np.add(p[:, :h], p[:, h : 2 * h], out=p[:, :h])
                out[s : s + k] = p[:, 0]  # the zero padding p[:, d:] is never written

        workers = max(1, workers or torch.get_num_threads()) if n * d >= _SCAN_ELEMS else 1
        spans = [(i * n // workers, (i + 1) * n // workers) for i in range(workers)]
        if workers > 1:
            list(worker_pool(workers).map(run, spans))
        else:
            run((0, n))
        return torch.from_numpy(out)
    out = torch.empty(n, dtype=torch.float64, device=a.device)
    for s in range(0, n, step):
        k = min(step, n - s)
        p = torch.zeros(k, width, dtype=torch.float64, device=a.device)
        torch.mul(a[ia[s : s + k]].double(), b[ib[s : s + k]].double(), out=p[:, :d])
        h = width
        while h > 1:
            h //= 2
            p[:, :h].add_(p[:, h : 2 * h])
        out[s : s + k] = p[:, 0]
    return out


def positive_pair_count(q_lab: Tensor, g_lab: Tensor) -> int:
    """Number of (query, gallery item) pairs with the same label (self pairs included)."""
    uniq, counts = torch.unique(g_lab, return_counts=True)
    k = torch.searchsorted(uniq, q_lab).clamp(max=uniq.numel() - 1)
    return int(torch.where(uniq[k] == q_lab, counts[k], 0).sum())


# ---------------------------------------------------------------------------------------------------------------
# array helpers: numpy arrays on CPU (single-threaded numpy in worker threads), torch tensors on other devices
# ---------------------------------------------------------------------------------------------------------------
def _searchsorted(a, v):
    """``#{a <= v}`` for each ``v`` (``a`` ascending)."""
    return np.searchsorted(a, v, side="right") if isinstance(a, np.ndarray) else torch.searchsorted(a, v, right=True)


def _nonzero(mask):
    """Indices of the true entries of a 1-d mask."""
    return np.flatnonzero(mask) if isinstance(mask, np.ndarray) else torch.nonzero(mask, as_tuple=True)[0]


def _cat(xs: list):
    return np.concatenate(xs) if isinstance(xs[0], np.ndarray) else torch.cat(xs)


def _mono32(x):
    """Order-preserving int64 key in ``[0, 2^32)`` of float32 values (``-0`` and ``+0`` share a key; no NaN)."""
    if isinstance(x, np.ndarray):
        bits = (x + np.float32(0.0)).view(np.int32).astype(np.int64)
        return np.where(bits >= 0, bits + 2**31, -1 - bits)
    bits = (x + 0.0).view(torch.int32).long()
    return torch.where(bits >= 0, bits + 2**31, -1 - bits)


def _f32_toward(x, up: bool):
    """float64 values rounded to float32 toward ``+inf`` (``up``) or ``-inf``: the float32 bound on the safe side."""
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore"):  # beyond float32's range: inf (up) or the largest float32 (down)
            y = x.astype(np.float32)
        off = y < x if up else y > x
        return np.where(off, np.nextafter(y, np.float32(np.inf if up else -np.inf)), y)
    y = x.float()
    off = y.double() < x if up else y.double() > x
    return torch.where(off, torch.nextafter(y, torch.full_like(y, math.inf if up else -math.inf)), y)


def _lp16_floor_bits(t: Tensor, dtype: torch.dtype) -> Tensor:
    """int16 bit patterns of the largest ``dtype`` (bf16/fp16) values ``<= t`` for ``t > 0``; 32767 elsewhere (rows
    with ``t <= 0`` are compared as floats, ``t = +inf`` rows have no candidates and 32767 is above every value)."""
    v = t.clamp(max=60000.0).to(dtype)
    bits = v.view(torch.int16)
    bits = torch.where(v.double() > t, bits - 1, bits)  # t > 0: one step down stays >= +0
    return torch.where((t > 0) & torch.isfinite(t), bits, torch.full_like(bits, 32767))


def _lp_values_np(blk: np.ndarray, flat: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds ``b_dn <= b <= b_up`` of the tile entries ``flat`` (``blk``: int16 bits of 16-bit formats)."""
    v = blk.ravel()[flat]
    if dtype == torch.bfloat16:
        v = (v.astype(np.int32) << 16).view(np.float32)
    elif dtype == torch.float16:
        v = v.view(np.float16).astype(np.float32)
    elif dtype == torch.float64:
        return _f32_toward(v, up=False), _f32_toward(v, up=True)
    return v, v


def _ge_np(blk: np.ndarray, thr: tuple[np.ndarray, ...], rows: bool, dtype: torch.dtype) -> np.ndarray:
    """Flat indices of the entries of ``blk`` at or above the per-row (``rows``) or per-column thresholds.

    16-bit formats: one integer compare of the raw bits where the threshold is positive (the int16 order of bit
    patterns is the float order on ``[t, inf)``, and every pattern below ``t``'s is a smaller value), a float
    compare on the few rows/columns whose threshold is ``<= 0``. float32 / float64: a float compare.
    """
    t64, t32, t16 = thr
    shape = (slice(None), None) if rows else (None, slice(None))
    if dtype == torch.float64:
        return np.flatnonzero(blk >= t64[shape])
    if dtype == torch.float32:
        return np.flatnonzero(blk >= t32[shape])
    flat = np.flatnonzero(blk >= t16[shape])
    slow = np.flatnonzero(t64 <= 0)
    if not slow.size:
        return flat
    sub = blk[slow] if rows else blk[:, slow]
    vals = (sub.astype(np.int32) << 16).view(np.float32) if dtype == torch.bfloat16 else sub.view(np.float16)
    r, k = np.nonzero(vals >= t32[slow][shape])
    width = blk.shape[1]
    return np.concatenate([flat, slow[r] * width + k if rows else r * width + slow[k]])


def tile_plan(nq: int, m: int, symmetric: bool, chunk_size: int | None = None) -> list[tuple]:
    """``[(bi, (q0, q1), bj, (c0, c1))]``: the tiles the candidate pass scores, query block by query block.

    Query blocks of ``chunk_size`` rows (default: ``max(Q, M) / 8``, between 1024 and 4096); all-vs-all
    (``symmetric``): the tiles ``(I, J)`` with ``J >= I`` of the square block grid; otherwise every gallery block of
    up to 4096 items for each query block.
    """
    size = max(nq, m)
    bq = int(chunk_size) if chunk_size else min(size, _TILE, max(1024, -(-size // 8)))
    bg = bq if symmetric else min(m, max(bq, _TILE))
    row_blocks = [(s, min(s + bq, nq)) for s in range(0, nq, bq)]
    col_blocks = row_blocks if symmetric else [(s, min(s + bg, m)) for s in range(0, m, bg)]
    return [
        (bi, rows, bj, col_blocks[bj])
        for bi, rows in enumerate(row_blocks)
        for bj in range(bi if symmetric else 0, len(col_blocks))
    ]


class CandidateEngine(RetrievalEngine):
    """Binary metrics of integer labels by the candidate pass (see the module docstring for the proof).

    ``precision`` is the matmul's (:class:`~common.metrics.retrieval_precision.Precision`). Works on any device. On
    CPU (``backend="numpy"``, the default there) the per-tile work after the matmul (extraction, classification)
    is single-threaded numpy on row slices of the tile, spread over :func:`worker_pool`'s threads (numpy releases
    the GIL; torch's own threads would fight over the cores with many small parallel ops); elsewhere it is torch
    (``backend="torch"``, which tests also run on CPU).
    """

    name = "candidates"

    def __init__(self, problem: RetrievalProblem, precision: Precision, backend: str = "auto") -> None:
        super().__init__(problem)
        self.threads = max(1, torch.get_num_threads())
        with torch_threads(1 if problem.device.type == "cpu" else self.threads):
            self._setup(problem, precision, backend)

    def _setup(self, problem: RetrievalProblem, precision: Precision, backend: str) -> None:
        pb = problem
        if backend not in ("auto", "numpy", "torch") or (backend == "numpy" and pb.device.type != "cpu"):
            raise ValueError(f"backend must be 'auto', 'torch' or (on CPU) 'numpy', got {backend!r}")
        self.p = precision
        self.sym = pb.symmetric
        self.cpu = backend == "numpy" or (backend == "auto" and pb.device.type == "cpu")
        # on CPU the small torch ops between matmuls run single-threaded (see torch_threads)
        self.small_op_threads = 1 if pb.device.type == "cpu" else self.threads
        self.xp = np if self.cpu else torch
        self.qe = pb.emb[pb.q_idx]  # [Q, D]
        self.ge = self.qe if self.sym else pb.emb[pb.g_idx]  # [M, D]
        self.q_lp = precision.round_inputs(self.qe)
        self.g_lp = self.q_lp if self.sym else precision.round_inputs(self.ge)
        self.nq, self.m = self.qe.shape[0], self.ge.shape[0]
        lab = pb.binary_labels
        q_lab, g_lab = lab[pb.q_idx], lab[pb.g_idx]
        gp = pb.gal_pos[pb.q_idx]
        self_pos = gp if pb.exclude_self else torch.full_like(gp, -1)  # [Q] gallery position of the query itself
        err = self._query_bounds()  # [Q] float64: E of each query
        t = self._positives(q_lab, g_lab, self_pos, err)
        t["depth"] = self._depth(t["npos"])  # [Q] positions that matter (huge for "map")
        t.update(q_lab=q_lab, g_lab=g_lab, self_pos=self_pos)
        t["defin"] = torch.zeros(int(t["hoff"][-1]), dtype=torch.long, device=pb.device)  # certain counts
        t["n_out"] = torch.zeros(self.nq, dtype=torch.long, device=pb.device)  # lowest positives out of reach
        t["thr64"] = torch.empty(self.nq, dtype=torch.float64, device=pb.device)  # extraction thresholds
        t["thr32"] = torch.empty(self.nq, dtype=torch.float32, device=pb.device)
        t["thr16"] = torch.full((self.nq,), 32767, dtype=torch.int16, device=pb.device)
        for key, v in t.items():  # numpy views on CPU share the tensors' memory
            setattr(self, key, v.numpy() if self.cpu else v)
        self.limited = "map" not in pb.want_binary  # depth-limited metrics only
        self._set_thresholds(0, self.nq)
        self.pending: dict[int, list[tuple]] = {}
        self.buf: Tensor | None = None

    # ------------------------------------------------------------------------------------------------ setup
    def _query_bounds(self) -> Tensor:
        """``[Q]`` the bound E of each query (float64).

        The per-vector norms ``|x^ - x|``, ``|x^|``, ``|x|`` are computed in the embeddings' dtype (``x^ - x`` is
        exact there, both being within a factor 2) and inflated by ``1 + (d + 2) 2^-23`` for float32, which bounds
        the rounding of a float32 norm of d terms: cheap, and still upper bounds.
        """
        d = self.qe.shape[1]
        grow = 1.0 + (d + 2) * (2.0**-23 if self.qe.dtype == torch.float32 else 2.0**-52)

        def terms(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # |x^ - x|, |x^|, |x| per vector, float64
            nrm = torch.linalg.vector_norm(x, dim=1).double() * grow
            if self.p.input_bound:  # rounding not observable (TF32): the worst case
                return self.p.input_bound * nrm, (1.0 + self.p.input_bound) * nrm, nrm
            hat = self.p.round_inputs(x).to(x.dtype)
            err = torch.linalg.vector_norm(hat - x, dim=1).double() * grow
            return err, torch.linalg.vector_norm(hat, dim=1).double() * grow, nrm

        e_q, nh_q, n_q = terms(self.qe)
        e_g, nh_g, _ = (e_q, nh_q, n_q) if self.sym else terms(self.ge)
        gamma = d * self.p.u_acc / (1.0 - d * self.p.u_acc)
        e_max, nh_max = float(e_g.max()), float(nh_g.max())
        slack = d * 2.0**-52 + 1e-30
        return e_q * nh_max + n_q * e_max + gamma * nh_q * nh_max + self.p.abs_out + slack

    def _positives(self, q_lab: Tensor, g_lab: Tensor, self_pos: Tensor, err: Tensor) -> dict[str, Tensor]:
        """Every (query, positive) pair, sorted by (query, exact score ascending), with the thresholds ``a`` / ``c``
        of each positive as packed search keys ``(query << 32) | float32 order key``."""
        dev = q_lab.device
        order0 = torch.argsort(g_lab, stable=True)
        uniq0, counts0 = torch.unique_consecutive(g_lab[order0], return_counts=True)
        starts0 = counts0.cumsum(0) - counts0
        k = torch.searchsorted(uniq0, q_lab).clamp(max=uniq0.numel() - 1)
        cnt = torch.where(uniq0[k] == q_lab, counts0[k], 0)
        rep = torch.repeat_interleave(torch.arange(self.nq, device=dev), cnt)  # query of each pair
        within = torch.arange(rep.numel(), device=dev) - (cnt.cumsum(0) - cnt)[rep]
        gpos = order0[starts0[k][rep] + within]
        keep = gpos != self_pos[rep]
        rep, gpos = rep[keep], gpos[keep]
        by_class = torch.argsort(q_lab[rep], stable=True)  # a class's rows stay in cache across its queries
        score = torch.empty(rep.numel(), dtype=torch.float64, device=dev)
        score[by_class] = exact_scores(
            self.qe, rep[by_class], self.ge, gpos[by_class], use_numpy=self.cpu, workers=self.threads
        )
        order = torch.argsort(score, stable=True)
        order = order[torch.argsort(rep[order], stable=True)]
        pq, ps = rep[order], score[order]  # [P] query, exact score
        npos = torch.bincount(pq, minlength=self.nq)  # [Q]
        pos_off = torch.cat([npos.new_zeros(1), npos.cumsum(0)])  # [Q + 1]
        hoff = pos_off + torch.arange(self.nq + 1, device=dev)  # [Q + 1]: query q counts k = 0..R at hoff[q] + k
        u, e = self.p.u_out, err[pq]
        y = ps + e
        a = torch.where(y >= 0, y / (1.0 - u), y / (1.0 + u))  # D^-1(p + E)
        a = a + (a.abs() + ps.abs() + e) * _MARGIN
        y = ps - e
        c = torch.where(y >= 0, y / (1.0 + u), y / (1.0 - u))  # U^-1(p - E)
        c = c - (c.abs() + ps.abs() + e) * _MARGIN
        c32 = _f32_toward(c, up=False)
        half = self.p.dtype in (torch.bfloat16, torch.float16)
        return {
            "pq": pq,
            "ps": ps,
            "npos": npos,
            "pos_off": pos_off,
            "hoff": hoff,
            "p_i": torch.arange(pq.numel(), device=dev) - pos_off[pq] + 1,  # ascending index within the query
            "p_seg": hoff[pq],
            "c64": c,
            "c32": c32,
            "c16": _lp16_floor_bits(c, self.p.dtype) if half else torch.zeros_like(pq, dtype=torch.int16),
            "a_key": (pq << 32) | _mono32(_f32_toward(a, up=True)),
            "c_key": (pq << 32) | _mono32(c32),
        }

    def _depth(self, npos: Tensor) -> Tensor:
        wanted, big = self.problem.want_binary, torch.iinfo(torch.long).max // 4
        depth = torch.zeros_like(npos)
        if "map" in wanted:
            return depth + big
        if "recall" in wanted:
            depth += max(int(r) for r in self.problem.recall_at)
        if "precision_at_1" in wanted:
            depth.clamp_(min=1)
        if "r_precision" in wanted or "map_at_r" in wanted:
            depth = torch.maximum(depth, npos)
        return depth

    def _set_thresholds(self, q0: int, q1: int) -> None:
        """Extraction thresholds of queries ``q0..q1``: the ``c`` of their lowest positive in reach (+inf if none)."""
        if self.pq.shape[0] == 0:
            self.thr64[q0:q1], self.thr32[q0:q1] = math.inf, math.inf
            return
        where = self.xp.where
        n_out, npos = self.n_out[q0:q1], self.npos[q0:q1]
        none = n_out >= npos
        f = (self.pos_off[q0:q1] + n_out).clip(max=self.pq.shape[0] - 1)
        self.thr64[q0:q1] = where(none, math.inf, self.c64[f])
        self.thr32[q0:q1] = where(none, math.inf, self.c32[f])
        self.thr16[q0:q1] = where(none, 32767, self.c16[f])

    # ------------------------------------------------------------------------------------------------ the pass
    def chunks(self, chunk_size: int | None = None) -> Iterator[dict[str, Tensor]]:
        plan = tile_plan(self.nq, self.m, self.sym, chunk_size)
        for k, (bi, rows, bj, cols) in enumerate(plan):
            with torch_threads(self.small_op_threads):
                self._tile(bi, rows, bj, cols)
                out = self._finish(bi, *rows) if k + 1 == len(plan) or plan[k + 1][0] != bi else None
            if out is not None:  # the query block has all of its counts
                yield out

    def _tile(self, bi: int, rows: tuple[int, int], bj: int, cols: tuple[int, int]) -> None:
        """Score the tile ``rows x cols`` once and count its entries for the row queries and, off the diagonal of
        an all-vs-all evaluation, for the column queries."""
        (q0, q1), (c0, c1) = rows, cols
        c, b = q1 - q0, c1 - c0
        if self.buf is None or self.buf.numel() < c * b:
            self.buf = torch.empty(c * b, dtype=self.p.dtype, device=self.qe.device)
        tile = self.buf[: c * b].view(c, b)
        with torch_threads(self.threads):
            lp_matmul(self.p, self.q_lp[q0:q1], self.g_lp[c0:c1], out=tile)
        sp = self.self_pos[q0:q1]
        hit = _nonzero((sp >= c0) & (sp < c1))
        if hit.shape[0]:  # the query's own gallery entry never counts
            cols_hit = sp[hit] - c0
            if self.cpu:
                hit, cols_hit = torch.from_numpy(hit), torch.from_numpy(cols_hit)
            tile[hit, cols_hit] = -math.inf
        both = self.sym and bj != bi
        step = max(1, _SCAN_ELEMS // b)
        parts = [(s, min(s + step, c)) for s in range(0, c, step)]
        scan = functools.partial(self._scan, tile, (q0, c0), (bi, bj), both)
        workers = self.threads if self.cpu else 1
        if len(parts) > 1 and workers > 1:
            found = list(worker_pool(workers).map(scan, parts))
        else:
            found = [scan(part) for part in parts]
        for res in found:
            for block, hist_idx, amb in res:
                if hist_idx.shape[0]:
                    h0 = int(hist_idx.min())
                    cnt = self.xp.bincount(hist_idx - h0)
                    self.defin[h0 : h0 + cnt.shape[0]] += cnt
                if amb[0].shape[0]:
                    self.pending.setdefault(block, []).append(amb)
        if self.limited:
            self._update_reach(q0, q1)
            if both:
                self._update_reach(c0, c1)

    def _thr(self, q0: int, q1: int) -> tuple:
        return self.thr64[q0:q1], self.thr32[q0:q1], self.thr16[q0:q1]

    def _scan(self, tile: Tensor, base: tuple[int, int], blocks: tuple[int, int], both: bool, part: tuple[int, int]):
        """Extract and classify the candidates of the tile rows ``part``: for the row queries and, with ``both``,
        for the column queries. Returns ``[(block, hist_idx, ambiguous)]`` (runs in a worker thread on CPU)."""
        (q0, c0), (r0, r1) = base, part
        blk = tile[r0:r1]
        i, j, b_dn, b_up = self._extract(blk, self._thr(q0 + r0, q0 + r1), rows=True)
        found = [(blocks[0], *self._classify(i + (q0 + r0), j + c0, b_dn, b_up))]
        if both:  # column queries: item c0 + j is the query, item q0 + r0 + i the gallery item
            i, j, b_dn, b_up = self._extract(blk, self._thr(c0, c0 + tile.shape[1]), rows=False)
            found.append((blocks[1], *self._classify(j + c0, i + (q0 + r0), b_dn, b_up)))
        return found

    def _extract(self, blk: Tensor, thr: tuple, rows: bool) -> tuple:
        """``(i, j, b_dn, b_up)``: entries of ``blk`` at or above the per-row (``rows``) or per-column threshold,
        with float32 bounds ``b_dn <= b <= b_up`` of their score."""
        dtype = self.p.dtype
        if self.cpu:
            arr = blk.view(torch.int16).numpy() if dtype in (torch.bfloat16, torch.float16) else blk.numpy()
            flat = _ge_np(arr, thr, rows, dtype)
            i, j = np.divmod(flat, arr.shape[1])
            return (i, j, *_lp_values_np(arr, flat, dtype))
        t = thr[0] if dtype == torch.float64 else thr[1]
        vals = blk if dtype == torch.float64 else blk.float()
        i, j = torch.nonzero(vals >= (t[:, None] if rows else t[None, :]), as_tuple=True)
        v = vals[i, j]
        if dtype == torch.float64:
            return i, j, _f32_toward(v, up=False), _f32_toward(v, up=True)
        return i, j, v, v

    def _classify(self, q, g, b_dn, b_up) -> tuple:
        """Place the candidate pairs ``(q, g)`` among the query's positives: ``(hist_idx, ambiguous)`` with
        ``hist_idx = hoff[q] + k`` for ``k`` the positives below the negative for certain (the ``defin`` counts)
        and ``ambiguous = (q, g, k_lo, k_hi)`` for the negatives whose order is open for positives ``k_lo + 1 ..
        k_hi``. Positives (same label) are dropped: they are scored exactly already."""
        neg = self.q_lab[q] != self.g_lab[g]
        q, g, b_dn, b_up = q[neg], g[neg], b_dn[neg], b_up[neg]
        base = self.pos_off[q]
        hi = q << 32
        k_lo = _searchsorted(self.a_key, hi | _mono32(b_dn)) - base
        k_hi = _searchsorted(self.c_key, hi | _mono32(b_up)) - base
        amb = k_hi > k_lo
        return self.hoff[q] + k_lo, (q[amb], g[amb], k_lo[amb], k_hi[amb])

    def _reach(self, q0: int, q1: int) -> tuple:
        """``(above [P_blk], n_out [C])`` for queries ``q0..q1``: the negatives above each positive for certain,
        and how many of the lowest positives are out of reach (rank + certain negatives above > depth)."""
        h0, h1 = int(self.hoff[q0]), int(self.hoff[q1])
        p0, p1 = int(self.pos_off[q0]), int(self.pos_off[q1])
        cs = self.xp.cumsum(self.defin[h0:h1], 0)
        seg, i, pq = self.p_seg[p0:p1] - h0, self.p_i[p0:p1], self.pq[p0:p1]
        r = self.npos[pq]
        above = cs[seg + r] - cs[seg + i - 1]  # sum over k >= i of the query's counts
        out = (r - i + 1) + above > self.depth[pq]
        return above, self.xp.bincount(pq[out] - q0, minlength=q1 - q0)

    def _update_reach(self, q0: int, q1: int) -> None:
        _, n_out = self._reach(q0, q1)
        if bool((n_out != self.n_out[q0:q1]).any()):
            self.n_out[q0:q1] = n_out
            self._set_thresholds(q0, q1)

    # ------------------------------------------------------------------------------------------------ finish
    def _finish(self, bi: int, q0: int, q1: int) -> dict[str, Tensor]:
        """Rescore the block's ambiguous negatives that matter, then its metrics from the counts."""
        tensor = torch.from_numpy if self.cpu else (lambda x: x)
        parts = self.pending.pop(bi, [])
        n_out = self._reach(q0, q1)[1] if self.limited else self.xp.zeros_like(self.npos[q0:q1])
        if parts:
            q, g, k_lo, k_hi = (_cat(list(t)) for t in zip(*parts))
            need = k_hi > self.xp.maximum(k_lo, n_out[q - q0])
            q, g, k_lo, k_hi = q[need], g[need], k_lo[need], k_hi[need]
            s = exact_scores(self.qe, tensor(q), self.ge, tensor(g), use_numpy=self.cpu, workers=self.threads)
            s = s.numpy() if self.cpu else s
            k = k_lo.copy() if self.cpu else k_lo.clone()
            act = _nonzero(k_hi > k_lo)
            while act.shape[0]:  # compare with the open positives in ascending order
                ka = k[act]
                live = ka < k_hi[act]
                act, ka = act[live], ka[live]
                act = act[self.ps[self.pos_off[q[act]] + ka] <= s[act]]
                k[act] += 1
            h0 = int(self.hoff[q0])
            width = int(self.hoff[q1]) - h0
            delta = self.xp.bincount(self.hoff[q] + k - h0, minlength=width)
            self.defin[h0 : h0 + width] += delta - self.xp.bincount(self.hoff[q] + k_lo - h0, minlength=width)
        above, _ = self._reach(q0, q1)
        p0, p1 = int(self.pos_off[q0]), int(self.pos_off[q1])
        pq, i = self.pq[p0:p1], self.p_i[p0:p1]
        n_neg = self.xp.where(i <= n_out[pq - q0], self.m, above)  # out of reach: past every cut-off
        rank = self.npos[pq] - i  # descending rank, 0-based
        npos = tensor(self.npos[q0:q1])
        n_neg, pq, rank = tensor(n_neg), tensor(pq), tensor(rank)
        p_max = max(int(npos.max()) if npos.numel() else 1, 1)
        out: dict[str, list[Tensor]] = {}
        step = max(1, _FINISH_ELEMS // p_max)
        for r0 in range(0, q1 - q0, step):
            r1 = min(q1 - q0, r0 + step)
            sel = slice(int(self.pos_off[q0 + r0]) - p0, int(self.pos_off[q0 + r1]) - p0)
            mat = torch.zeros(r1 - r0, p_max, dtype=torch.long, device=npos.device)
            mat[pq[sel] - (q0 + r0), rank[sel]] = n_neg[sel]
            res = binary_metrics(npos[r0:r1], mat, self.problem.want_binary, self.problem.recall_at)
            for key, v in res.items():
                out.setdefault(key, []).append(v)
        return {key: torch.cat(v) for key, v in out.items()}
