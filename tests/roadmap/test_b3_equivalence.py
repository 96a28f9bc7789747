"""Our O(B^2) / chunked SupAP and Smooth-AP equal the B x B x B formulation of the benchmark (within 1e-6)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from roadmap.losses import SmoothAP, SupAP

spec = importlib.util.spec_from_file_location(
    "bench_rank_losses", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rank_losses.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("chunk", [None, 50])
@pytest.mark.parametrize("name", ["supap", "smoothap"])
def test_values_and_gradients_match_b3(name, chunk):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(64, 32, generator=g)
    labels = torch.arange(16).repeat_interleave(4)
    ours = SupAP(chunk_size=chunk) if name == "supap" else SmoothAP(chunk_size=chunk)
    ref = bench.supap_b3 if name == "supap" else bench.smoothap_b3
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, b = ours(x1, labels), ref(x2, labels)
    a.backward()
    b.backward()
    assert abs(a.item() - b.item()) < 1e-6
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)
