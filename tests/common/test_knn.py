"""common.metrics.knn: exact faiss kNN against torch topk on cosine similarities."""

from __future__ import annotations

import pytest
import torch

from common.metrics.knn import knn_search


def _data(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3.0  # not normalised on purpose


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_matches_torch_topk(backend):
    q, r = _data(50, 16, 0), _data(300, 16, 1)
    sims, idx = knn_search(q, r, 10, backend=backend, chunk_size=17)
    exp = torch.topk(torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(r, dim=1).T, 10)
    assert sims.shape == (50, 10) and idx.dtype == torch.int64
    torch.testing.assert_close(sims, exp.values, atol=1e-5, rtol=0)
    assert torch.equal(idx, exp.indices)  # random data: no ties


def test_knn_exclude_self_removes_own_index_even_with_duplicates():
    x = _data(40, 8, 2)
    x[5] = x[6]  # a duplicate ties with its twin at similarity 1
    sims, idx = knn_search(x, x, 4, exclude_self=True)
    rows = torch.arange(40)[:, None]
    assert not (idx == rows).any()
    xn = torch.nn.functional.normalize(x, dim=1)
    s = xn @ xn.T
    s.fill_diagonal_(-float("inf"))
    exp = torch.topk(s, 4)
    torch.testing.assert_close(sims, exp.values, atol=1e-5, rtol=0)
    assert idx[5, 0] == 6 and idx[6, 0] == 5


def test_knn_bad_inputs():
    x = _data(5, 3, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn_search(x, x, 5, exclude_self=True)
    with pytest.raises(ValueError, match="dimension"):
        knn_search(x, _data(5, 4, 0), 2)
    with pytest.raises(ValueError, match="NaN"):
        knn_search(torch.full((2, 3), float("nan")), x, 2)
