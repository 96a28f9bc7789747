"""End to end: the ROADMAP demo runs its three losses through one launcher multirun on tiny Fashion-MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from roadmap import demo
from tests.conftest import TINY_DEMO_OVERRIDES


@pytest.mark.slow
def test_demo_runs_three_losses_and_writes_tables_and_artifacts(tiny_fmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    overrides = [
        f"paths.data_dir={tiny_fmnist}",
        *TINY_DEMO_OVERRIDES,
    ]
    rc = demo.main(["--out", str(out), "--seeds", "0,1", *overrides])
    assert rc == 0
    saved = json.loads((out / "roadmap.json").read_text())
    assert set(saved["rows"]) == set(demo.ROWS) and saved["seeds"] == [0, 1]
    for row in saved["rows"].values():
        assert row["map@r"]["n"] == 2 and 0.0 <= row["map@r"]["mean"] <= 1.0
    # one result record per (row, seed), table demo, written by the launcher's callback into <out>/records
    names = sorted(p.name for p in (out / "records" / "roadmap" / "demo").glob("*.json"))
    assert names == sorted(f"{row}-s{seed}.json" for row in demo.ROWS for seed in (0, 1))
    assert saved["claim"]["n_seeds"] == 2 and "rests on 2 seed(s) only" in saved["claim"]["detail"]
    for row, files in saved["artifacts"].items():
        emb = np.load(out / "artifacts" / files["embeddings"])
        assert emb["embeddings"].shape[0] == emb["labels"].shape[0] > 0, row
        assert (out / "artifacts" / files["curve"]).read_text().startswith("step,loss\n")
    md = (out / "roadmap.md").read_text()
    assert "| ROADMAP (SupAP + calibration) |" in md and "make demo-roadmap" in md
