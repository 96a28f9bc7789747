"""The bf16 candidate pass for binary metrics on CPU: bfloat16 scores, a proven error bound, float64 rescoring.

:func:`bf16_score_error_bound` is the worst-case bound; :class:`_Bf16Binary` uses a tighter per-vector bound and
holds the proof that the result is the float64 ranking, ties included. The metric formulas and the tie rule are in
the docstring of :mod:`common.metrics.retrieval`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from common.metrics.retrieval_dense import _binary_metrics, _binary_metrics_from_scores, _dense_scores, _Gallery

_BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest)
_FP32_U = 2.0**-24
_BF16_NEG_INF = np.int16(-128)  # bit pattern 0xFF80 of -inf in bfloat16, as int16


class _Gallery64(_Gallery):
    """The same distinct gallery vectors in float64 (the exact fallback of the bf16 pass)."""

    def __init__(self, base: _Gallery) -> None:
        self.gal, self.uniq, self.inv = base.gal, base.uniq.double(), base.inv


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
