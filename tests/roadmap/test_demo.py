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
    rc = demo.main(["--out", str(out), "--sweep-dir", str(tmp_path / "sweep"), *overrides])
    assert rc == 0
    saved = json.loads((out / "roadmap.json").read_text())
    assert set(saved["runs"]) == set(demo.LOSSES)
    for loss, run in saved["runs"].items():
        assert 0.0 <= run["test/map@r"] <= 1.0
        emb = np.load(out / "artifacts" / saved["artifacts"][loss]["embeddings"])
        assert emb["embeddings"].shape[0] == emb["labels"].shape[0] > 0
        assert (out / "artifacts" / saved["artifacts"][loss]["curve"]).read_text().startswith("step,loss\n")
    md = (out / "roadmap.md").read_text()
    assert "| ROADMAP (SupAP + calibration) |" in md and "make demo-roadmap" in md
