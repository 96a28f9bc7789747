"""The candidate pass (common.metrics.retrieval_candidates) and its precision choice (retrieval_precision).

Every precision, both array backends, the all-vs-all (half-matmul) and the split layouts must give the per-query
values of the dense float64 ranking; the automatic precision choice must never pick one measured slower than
float32. The CUDA versions are in test_metrics_gpu.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.metrics.retrieval import choose_engine, evaluate_retrieval, retrieval_metrics
from common.metrics.retrieval_candidates import (
    CandidateEngine,
    _f32_toward,
    _lp16_floor_bits,
    _mono32,
    exact_scores,
)
from common.metrics.retrieval_engine import RetrievalProblem
from common.metrics.retrieval_precision import (
    LOW_PRECISION_MARGIN,
    PrecisionChoice,
    candidate_precision,
    choose_precision,
    precision_by_name,
)
from tests.helpers.retrieval_data import assert_same_per_query, hard_set

BINARY = ("recall", "precision_at_1", "r_precision", "map_at_r", "map")
DEPTH = ("recall", "precision_at_1", "r_precision", "map_at_r")  # no "map": the depth rule prunes
CPU_PRECISIONS = ("bf16", "fp16", "fp32", "fp64")


@pytest.mark.parametrize("metrics", [BINARY, DEPTH])
@pytest.mark.parametrize("split", [False, True])
def test_every_precision_and_backend_gives_the_float64_ranking(metrics, split):
    x, labels = hard_set()
    kw = {"metrics": metrics, "recall_at": (1, 3, 40), "per_query": True, "chunk_size": 96}
    if split:  # overlapping query / gallery sets: the query-vs-gallery tiles, with and without self pairs
        kw.update(query_idx=torch.arange(0, 400), gallery_idx=torch.arange(250, 700))
    ref = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)
    assert 0.2 < ref["map@r"] < 0.9
    for precision in CPU_PRECISIONS:
        assert_same_per_query(retrieval_metrics(x, labels, candidate_pass=precision, **kw), ref)
    # the torch backend (what runs on CUDA) on CPU tensors
    kw.pop("chunk_size")
    pb = _problem(x, labels, metrics, **{k: v for k, v in kw.items() if k.endswith("_idx")})
    for precision in ("bf16", "fp32"):
        engine = CandidateEngine(pb, precision_by_name(precision, pb.device), backend="torch")
        outs = list(engine.chunks(64))
        for key, r in ref["per_query"].items():
            got = torch.cat([o[key] for o in outs])
            torch.testing.assert_close(got, r, atol=1e-12, rtol=0, equal_nan=True)


def _problem(x, labels, metrics, query_idx=None, gallery_idx=None, exclude_self=True) -> RetrievalProblem:
    n = x.shape[0]
    return RetrievalProblem(
        emb=torch.nn.functional.normalize(x, dim=1),
        labels=labels,
        q_idx=torch.arange(n) if query_idx is None else query_idx,
        g_idx=torch.arange(n) if gallery_idx is None else gallery_idx,
        exclude_self=exclude_self,
        want_binary=tuple(metrics),
        want_graded=(),
        recall_at=(1, 3, 40),
    )


def test_all_vs_all_half_matmul_equals_the_full_layout():
    """The same queries and gallery, once as the identical index (upper-triangle tiles, counted both ways) and once
    with the gallery in another order (every tile scored): identical per-query values."""
    x, labels = hard_set(seed=1)
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    for precision in ("bf16", "fp32"):
        for exclude_self in (True, False):
            kw = {"metrics": BINARY, "recall_at": (1, 5), "per_query": True, "exclude_self": exclude_self}
            sym = retrieval_metrics(x, labels, candidate_pass=precision, chunk_size=77, **kw)
            full = retrieval_metrics(x, labels, gallery_idx=perm, candidate_pass=precision, chunk_size=77, **kw)
            assert_same_per_query(sym, full)
    assert _problem(x, labels, BINARY).symmetric
    assert not _problem(x, labels, BINARY, gallery_idx=perm).symmetric


def test_poor_embeddings_depth_rule_is_exact():
    """Random directions: every positive is deep in the ranking and nearly the whole gallery passes the first
    threshold; the depth rule then raises it block after block. Values stay those of dense float64 scoring."""
    gen = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(900, 16, generator=gen), dim=1)
    labels = torch.randint(0, 60, (900,), generator=gen)
    kw = {"recall_at": (1, 10), "per_query": True}
    for metrics in (DEPTH, ("precision_at_1",), ("recall",), BINARY):
        ref = retrieval_metrics(x.double(), labels, metrics=metrics, candidate_pass="off", **kw)
        for precision in ("bf16", "fp32"):
            assert_same_per_query(
                retrieval_metrics(x, labels, metrics=metrics, candidate_pass=precision, chunk_size=128, **kw), ref
            )


def test_exact_ties_with_duplicates_are_pessimistic():
    """A negative that duplicates a positive's vector ties with it exactly and ranks before it."""
    gen = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=1)
    labels = torch.arange(40) // 4
    x[7] = x[1]  # item 7 (class 1) duplicates item 1 (class 0): for queries 0, 2, 3 it ties with a positive
    out = retrieval_metrics(x, labels, metrics=BINARY, candidate_pass="bf16", per_query=True, recall_at=(1,))
    ref = retrieval_metrics(x.double(), labels, metrics=BINARY, candidate_pass="off", per_query=True, recall_at=(1,))
    assert_same_per_query(out, ref)
    s = exact_scores(x, torch.tensor([0, 0]), x, torch.tensor([1, 7]))
    assert s[0] == s[1]


def test_exact_scores_numpy_and_torch_agree_bitwise():
    gen = torch.Generator().manual_seed(5)
    for d in (1, 7, 100, 512):
        a = torch.randn(50, d, generator=gen)
        b = torch.randn(30, d, generator=gen).double()
        ia, ib = torch.randint(0, 50, (400,), generator=gen), torch.randint(0, 30, (400,), generator=gen)
        s_np = exact_scores(a, ia, b, ib, use_numpy=True)
        s_t = exact_scores(a, ia, b, ib, use_numpy=False)
        assert torch.equal(s_np, s_t)
        torch.testing.assert_close(s_np, (a.double()[ia] * b[ib]).sum(1), atol=1e-12, rtol=0)


def test_float32_key_helpers():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.standard_normal(3000), rng.standard_normal(300) * 1e-40, [0.0, -0.0, 1.0, -1.0, 1e300]])
    y = torch.tensor(y)
    dn, up = _f32_toward(y, up=False), _f32_toward(y, up=True)
    assert (dn.double() <= y).all() and (up.double() >= y).all()
    assert ((up == dn) | (torch.nextafter(dn, torch.tensor(math.inf)) == up)).all()  # adjacent float32 values
    for arr in (dn, up):  # the numpy twin gives the same float32 values
        np.testing.assert_array_equal(_f32_toward(y.numpy(), up=arr is up), arr.numpy())
    v = torch.cat([dn, up, torch.tensor([-0.0, 0.0, math.inf, -math.inf])])
    key = _mono32(v)
    order = torch.argsort(v.double(), stable=True)
    assert (key[order].diff() >= 0).all()  # order-preserving
    assert key[-4] == key[-3]  # -0 and +0 share a key
    np.testing.assert_array_equal(_mono32(v.numpy()), key.numpy())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lp16_floor_bits_is_the_largest_value_below(dtype):
    t = torch.tensor(np.random.default_rng(1).uniform(1e-6, 2.0, 2000))
    bits = _lp16_floor_bits(t, dtype)
    val = bits.view(dtype).double()
    assert (val <= t).all()
    up = (bits + 1).view(dtype).double()  # the next value up (positive patterns)
    assert (up > t).all()
    special = _lp16_floor_bits(torch.tensor([0.0, -0.5, math.inf]), dtype)
    assert (special == 32767).all()  # compared as floats (t <= 0) or never a candidate (+inf)


# ----------------------------------------------------------------------------------------------------------------
# the precision choice
# ----------------------------------------------------------------------------------------------------------------
def test_choice_never_picks_a_precision_measured_slower_than_float32():
    # an AVX2-only CPU: bf16 / fp16 fall back to scalar loops
    assert choose_precision({"fp32": 45.0, "bf16": 0.3, "fp16": 0.3}) == "fp32"
    assert choose_precision({"fp32": 45.0, "bf16": None, "fp16": None}) == "fp32"  # dropped in the first round
    # AVX-512 BF16: bf16 well ahead
    assert choose_precision({"fp32": 150.0, "bf16": 400.0, "fp16": 0.7}) == "bf16"
    # slightly faster is not enough to pay for a wider error window
    assert choose_precision({"fp32": 100.0, "bf16": 100.0 * LOW_PRECISION_MARGIN * 0.99}) == "fp32"
    # a GPU: fp16 and bf16 equally fast, fp16's window is tighter
    assert choose_precision({"fp32": 50.0, "tf32": 400.0, "bf16": 800.0, "fp16": 790.0}) == "fp16"
    rng = np.random.default_rng(0)
    for _ in range(500):  # random timings: the pick is never slower than float32
        rates = {k: float(rng.lognormal(4, 1.5)) for k in ("fp32", "bf16", "fp16")}
        pick = choose_precision(rates)
        assert rates[pick] >= rates["fp32"]
    with pytest.raises(ValueError, match="float32"):
        choose_precision({"fp32": None, "bf16": 10.0})
    # int8 is probed and reported, never a candidate-pass precision
    assert choose_precision({"fp32": 40.0, "bf16": 0.3, "fp16": 0.3, "int8": 2000.0}) == "fp32"


# machines described by their probe results: (rates in GFLOP/s, the precision the candidate pass must use)
PROFILES = {
    "avx2_only": ({"fp32": 45.0, "bf16": 0.29, "fp16": 0.29, "int8": 0.63}, "fp32"),
    "avx2_dropped_in_first_round": ({"fp32": 45.0, "bf16": None, "fp16": None, "int8": None}, "fp32"),
    "avx512_bf16": ({"fp32": 150.0, "bf16": 420.0, "fp16": 0.7, "int8": 600.0}, "bf16"),
    "native_fp16": ({"fp32": 60.0, "bf16": 61.0, "fp16": 240.0, "int8": 300.0}, "fp16"),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_auto_on_injected_probe_results_uses_the_fast_precision_and_stays_exact(profile, monkeypatch):
    """The whole automatic path (probe rates -> choice -> engine -> values) on a machine described by its probe
    results: the candidate pass runs in the expected precision and gives the float64 ranking."""
    from common.metrics import retrieval_precision

    rates, expected = PROFILES[profile]
    monkeypatch.setattr(retrieval_precision, "probe_rates", lambda device: dict(rates))
    retrieval_precision._cached_choice.cache_clear()
    try:
        choice = candidate_precision("cpu")
        assert choice.precision.name == expected and choice.rates == rates
        x, labels = hard_set(n=500, seed=11)
        kw = {"metrics": DEPTH, "recall_at": (1, 5), "per_query": True}
        assert choose_engine(_problem(x, labels, DEPTH)).p.name == expected
        ref = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)
        assert_same_per_query(retrieval_metrics(x, labels, **kw), ref)
        split = {"query_idx": torch.arange(0, 300), "gallery_idx": torch.arange(200, 500)}
        ref = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw, **split)
        assert_same_per_query(retrieval_metrics(x, labels, **kw, **split), ref)
    finally:
        retrieval_precision._cached_choice.cache_clear()


_AVX2_SCRIPT = """
import json, torch
from common.metrics.retrieval import retrieval_metrics
from common.metrics.retrieval_precision import candidate_precision
from tests.helpers.retrieval_data import hard_set
c = candidate_precision("cpu")
x, labels = hard_set(n=400, seed=12)
kw = dict(metrics=("recall", "precision_at_1", "r_precision", "map_at_r", "map"), recall_at=(1, 5))
print(json.dumps({"capability": c.capability, "precision": c.precision.name, "rates": c.rates,
                  "auto": retrieval_metrics(x, labels, **kw),
                  "oracle": retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)}))
"""


def test_emulated_avx2_cpu_never_uses_a_slower_precision():
    """A fresh process with torch limited to AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, how an
    AVX2-only CPU is emulated): the probe sees AVX2, the chosen precision was measured at least as fast as float32,
    and the values are the float64 oracle's."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", _AVX2_SCRIPT], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["capability"] == "AVX2"
    rates = res["rates"]
    assert rates[res["precision"]] >= rates["fp32"]
    assert res["precision"] == choose_precision(rates)
    for key, ref in res["oracle"].items():
        assert res["auto"][key] == pytest.approx(ref, abs=1e-12), key


def test_auto_uses_the_probed_precision(monkeypatch):
    import common.metrics.retrieval as retrieval_mod

    x, labels = hard_set(n=300)
    for name in ("fp32", "bf16"):
        choice = PrecisionChoice("cpu", "test", precision_by_name(name, torch.device("cpu")), {"fp32": 1.0})
        monkeypatch.setattr(retrieval_mod, "candidate_precision", lambda device, c=choice: c)
        pb = _problem(x, labels, DEPTH)
        engine = choose_engine(pb)
        assert isinstance(engine, CandidateEngine) and engine.p.name == name


def test_probe_is_cached_and_describes_itself():
    c1 = candidate_precision("cpu")
    assert candidate_precision(torch.device("cpu")) is c1
    assert c1.rates["fp32"] > 0 and c1.precision.name in c1.rates
    assert c1.rates[c1.precision.name] >= c1.rates["fp32"]
    assert "candidate pass in" in c1.describe() and c1.capability == torch.backends.cpu.get_cpu_capability()


def test_forced_precision_errors():
    x, labels = hard_set(n=100)
    with pytest.raises(ValueError, match="tf32"):
        retrieval_metrics(x, labels, metrics=("map_at_r",), candidate_pass="tf32")
    with pytest.raises(ValueError, match="candidate_pass"):
        retrieval_metrics(x, labels, metrics=("map_at_r",), candidate_pass="int4")


def test_empty_inputs_raise_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        evaluate_retrieval(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        evaluate_retrieval(torch.zeros(5, 0), torch.zeros(5, dtype=torch.long))
    x = torch.randn(6, 4)
    for key in ("query_idx", "gallery_idx"):
        with pytest.raises(ValueError, match=f"{key} is empty"):
            evaluate_retrieval(x, torch.zeros(6, dtype=torch.long), **{key: torch.tensor([], dtype=torch.long)})
