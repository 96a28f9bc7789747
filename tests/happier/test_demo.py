"""End to end: the demo runs both experiments through the real launcher on tiny Fashion-MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from happier import demo
from tests.conftest import TINY_DEMO_OVERRIDES


@pytest.mark.slow
def test_demo_runs_both_models_and_writes_outputs(tiny_fmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    overrides = [
        f"paths.data_dir={tiny_fmnist}",
        *TINY_DEMO_OVERRIDES,
        "callbacks.retrieval_grid.query_idx=[0,7]",
        "callbacks.retrieval_grid.k=3",
    ]
    payload = demo.main(["--out", str(out), "--seeds", "0,1", *overrides])
    saved = json.loads((out / "happier.json").read_text())
    assert set(saved["rows"]) == {"happier", "roadmap"} == set(payload["rows"])
    for row in saved["rows"].values():
        for key in ("hap", "asi", "ndcg", "recall@1"):
            assert row[key]["n"] == 2 and 0.0 <= row[key]["mean"] <= 1.0
    # one result record per (row, seed), table demo, written by the launcher's callback into <out>/records
    assert sorted(p.name for p in (out / "records" / "happier" / "demo").glob("*.json")) == [
        "happier-s0.json",
        "happier-s1.json",
        "roadmap-s0.json",
        "roadmap-s1.json",
    ]
    assert saved["claim"]["n_seeds"] == 2 and "rests on 2 seed(s) only" in saved["claim"]["detail"]
    md = (out / "happier.md").read_text()
    assert "| H-AP |" in md and "python -m happier.demo" in md and "(n=2)" in md
    assert (out / "happier_grid.png").stat().st_size > 1000
    # the report's inputs: embeddings (PR curves) and loss curves, one per model
    for model in ("happier", "roadmap"):
        emb = np.load(out / "artifacts" / f"happier_retrieval_{model}.npz")
        assert emb["embeddings"].shape[0] == emb["labels"].shape[0] > 0
        assert (out / "artifacts" / f"happier_curve_{model}.csv").read_text().startswith("step,loss")
