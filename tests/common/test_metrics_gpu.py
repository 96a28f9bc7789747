"""The metrics on CUDA: every engine and candidate-pass precision gives the float64 CPU values; the precision probe;
faiss-gpu and torch kNN against the CPU search; the binary metrics against pytorch-metric-learning run on the GPU.

Marked ``gpu`` and skipped without a CUDA device. Imports only torch, numpy and pytest at module level (PML and faiss
are optional per test), so ``benchmarks/gpu_check.sh`` can run it on a bare torch install.
"""

from __future__ import annotations

import pytest
import torch

from common.metrics.knn import faiss_gpu_available, knn_search
from common.metrics.retrieval import evaluate_retrieval, retrieval_metrics
from common.metrics.retrieval_candidates import exact_scores
from common.metrics.retrieval_precision import candidate_precision
from tests.helpers.retrieval_data import assert_same_per_query, hard_set

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BINARY = ("recall", "precision_at_1", "r_precision", "map_at_r", "map")
DEPTH = ("recall", "precision_at_1", "r_precision", "map_at_r")  # no "map": the candidate pass's depth rule prunes
GRADED = ("ndcg", "hap", "asi")


def _cuda_precisions() -> list[str]:
    return ["fp32", "fp16", "tf32", "bf16"] if torch.cuda.get_device_capability()[0] >= 8 else ["fp32", "fp16"]


@pytest.mark.parametrize("metrics", [BINARY, DEPTH])
def test_cuda_candidate_pass_every_precision_gives_the_float64_ranking(metrics):
    x, labels = hard_set(n=3000, seed=7, dim=64)
    kw = {"metrics": metrics, "recall_at": (1, 3, 40), "per_query": True}
    ref = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw)  # dense float64 scores on CPU
    for name in ["auto", *_cuda_precisions()]:
        got = retrieval_metrics(x.cuda(), labels.cuda(), candidate_pass=name, **kw)  # all-vs-all: half the matmul
        assert_same_per_query(got, ref)
        got = retrieval_metrics(x, labels, candidate_pass=name, device="cuda", chunk_size=700, **kw)
        assert_same_per_query(got, ref)
    split = {"query_idx": torch.arange(0, 1800), "gallery_idx": torch.arange(1000, 3000)}
    ref = retrieval_metrics(x.double(), labels, candidate_pass="off", **kw, **split)
    for name in ["auto", "fp32"]:
        assert_same_per_query(retrieval_metrics(x.cuda(), labels.cuda(), candidate_pass=name, **kw, **split), ref)


def test_cuda_exact_scores_match_cpu_bitwise():
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(200, 96, generator=gen), torch.randn(150, 96, generator=gen)
    ia, ib = torch.randint(0, 200, (5000,), generator=gen), torch.randint(0, 150, (5000,), generator=gen)
    cpu = exact_scores(a, ia, b, ib)
    gpu = exact_scores(a.cuda(), ia.cuda(), b.cuda(), ib.cuda())
    assert torch.equal(gpu.cpu(), cpu)


def test_cuda_graded_and_dense_engines_match_cpu():
    x, fine = hard_set(n=1200, seed=9, dim=32)
    labels = torch.stack([fine, fine // 6], 1)
    kw = {"metrics": BINARY + GRADED, "recall_at": (1, 10), "per_query": True}
    ref = retrieval_metrics(x, labels, **kw)  # count engine on CPU
    for engine in ("auto", "tree", "generic"):
        assert_same_per_query(retrieval_metrics(x.cuda(), labels.cuda(), graded_engine=engine, **kw), ref, atol=1e-9)
    multi = torch.nn.functional.one_hot(fine % 7, 7).bool() | torch.nn.functional.one_hot(fine % 5, 7).bool()
    ref = retrieval_metrics(x, multi, **kw)
    assert_same_per_query(retrieval_metrics(x.cuda(), multi.cuda(), **kw), ref, atol=1e-9)
    cpu = evaluate_retrieval(x, labels, metrics=BINARY + GRADED, recall_at=(1, 10))
    assert evaluate_retrieval(x, labels, metrics=BINARY + GRADED, recall_at=(1, 10), device="cuda") == pytest.approx(
        cpu, abs=1e-9
    )


def test_cuda_precision_probe_never_picks_a_slower_precision():
    choice = candidate_precision("cuda")
    assert choice.precision.name in _cuda_precisions()
    assert choice.rates[choice.precision.name] >= choice.rates["fp32"]
    assert torch.cuda.get_device_name() in choice.describe()
    assert candidate_precision(torch.device("cuda")) is choice  # cached


def test_binary_metrics_match_pml_on_the_gpu():
    """Tie-free clustered data: PML's AccuracyCalculator on the GPU (faiss-gpu when installed, else its CPU
    fallback) and ours on the GPU agree."""
    acc = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 40, (2000,), generator=gen)
    x = torch.randn(40, 32, generator=gen)[labels] + 1.5 * torch.randn(2000, 32, generator=gen)
    x = torch.nn.functional.normalize(x.double(), dim=1).float()
    calc = acc.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cuda"),
    )
    pml = calc.get_accuracy(x.cuda(), labels.cuda())
    ours = evaluate_retrieval(x.cuda(), labels.cuda(), metrics=("precision_at_1", "r_precision", "map_at_r"))
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def _knn_data(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3.0


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_knn_on_cuda_matches_cpu(backend):
    q, r = _knn_data(64, 32, 4), _knn_data(500, 32, 5)
    s_cpu, i_cpu = knn_search(q, r, 20, backend="torch")  # no faiss needed for the reference
    s_gpu, i_gpu = knn_search(q.cuda(), r.cuda(), 20, backend=backend)
    assert s_gpu.device.type == "cuda" and i_gpu.device.type == "cuda"
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, atol=1e-4, rtol=0)
    assert torch.equal(i_gpu.cpu(), i_cpu)


@pytest.mark.skipif(not faiss_gpu_available(), reason="needs faiss with GPU support")
def test_faiss_gpu_knn_matches_cpu_with_exclude_self():
    """faiss-gpu (what ``auto`` uses on CUDA when it is installed) against faiss on CPU, self removed by index."""
    x = _knn_data(3000, 64, 6)
    x[11] = x[12]  # a duplicate ties with its twin at similarity 1
    s_cpu, i_cpu = knn_search(x, x, 50, exclude_self=True, backend="faiss")
    s_gpu, i_gpu = knn_search(x.cuda(), x.cuda(), 50, exclude_self=True, backend="faiss")
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, atol=1e-4, rtol=0)
    assert not (i_gpu.cpu() == torch.arange(3000)[:, None]).any()
    assert i_gpu[11, 0] == 12 and i_gpu[12, 0] == 11
    # indices agree except where two neighbours are closer than the search's float32 resolution
    assert (i_gpu.cpu() == i_cpu).float().mean() > 0.99
