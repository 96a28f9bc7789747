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
    payload = demo.main(["--out", str(out), "--run-dir", str(tmp_path / "runs"), *overrides])
    saved = json.loads((out / "happier.json").read_text())
    assert set(saved["runs"]) == {"HAPPIER", "ROADMAP"} == set(payload["runs"])
    for run in saved["runs"].values():
        for key in ("test/hap", "test/asi", "test/ndcg", "test/recall@1"):
            assert 0.0 <= run["metrics"][key] <= 1.0
        assert run["grid"]["query_idx"] == [0, 7] and len(run["grid"]["topk"][0]) == 3
    md = (out / "happier.md").read_text()
    assert "| H-AP |" in md and "python -m happier.demo" in md
    assert (out / "happier_grid.png").stat().st_size > 1000
    # the report's inputs: embeddings (PR curves) and loss curves, one per model
    for model in ("happier", "roadmap"):
        emb = np.load(out / "artifacts" / f"happier_retrieval_{model}.npz")
        assert emb["embeddings"].shape[0] == emb["labels"].shape[0] > 0
        assert (out / "artifacts" / f"happier_curve_{model}.csv").read_text().startswith("step,loss")
