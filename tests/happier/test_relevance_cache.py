"""Chunked test-set relevance tables, cached under the cache dir (never the dataset folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from happier import relevance_cache as rc
from tests.happier import _brute


def _labels() -> torch.Tensor:
    fine = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    return torch.stack([fine, torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])], dim=1)


def test_chunked_table_matches_loop_pop_relevance() -> None:
    labels = _labels()
    table = rc.compute_relevance_table(labels, chunk_size=2)
    lab = labels.tolist()
    for q in range(len(lab)):
        levels = [_brute.shared(lab[q], lab[j]) for j in range(len(lab))]  # query counted at level L
        rel = _brute.pop_relevance(levels, 2)
        for j, t in enumerate(levels):
            assert table[q, t].item() == pytest.approx(rel[j])
    assert torch.equal(table, rc.compute_relevance_table(labels, chunk_size=100))
    no_self = rc.compute_relevance_table(labels, chunk_size=4, count_query=False)
    # query 2 is alone in its fine class: without itself, level 2 is empty
    assert no_self[2, 2].item() == 0.0 and table[2, 2].item() == pytest.approx(2.0)


def test_cache_is_written_under_cache_dir_and_reused(tmp_path: Path, monkeypatch) -> None:
    labels = _labels()
    data_dir, cache_dir = tmp_path / "data", tmp_path / "cache"
    data_dir.mkdir()
    table = rc.cached_relevance_table(labels, cache_dir, name="sop/test", chunk_size=3)
    files = list(cache_dir.rglob("*.pt"))
    assert len(files) == 1 and files[0].parent == cache_dir / "happier" / "relevance"
    assert "sop_test_pop_1" in files[0].name
    assert not any(data_dir.iterdir())

    def boom(*a, **k):
        raise AssertionError("recomputed instead of loading the cache")

    monkeypatch.setattr(rc, "compute_relevance_table", boom)
    assert torch.equal(rc.cached_relevance_table(labels, cache_dir, name="sop/test"), table)
    # other labels -> another file (the hash is in the name), so no stale table is ever loaded
    with pytest.raises(AssertionError, match="recomputed"):
        rc.cached_relevance_table(labels.flip(0), cache_dir, name="sop/test")


def test_map_kind_and_alpha_in_name(tmp_path: Path) -> None:
    labels = _labels()
    t = rc.cached_relevance_table(labels, tmp_path, kind="map", alpha=[1.0, 1.0])
    assert t.shape == (9, 3)
    assert len(list((tmp_path / "happier" / "relevance").glob("test_map_1-1_*.pt"))) == 1
    with pytest.raises(ValueError, match="chunk_size"):
        rc.compute_relevance_table(labels, chunk_size=0)
