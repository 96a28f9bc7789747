"""End to end: the GalLoP demo on tiny Fashion-MNIST files with the random-init tiny CLIP (no weights on disk)."""

from __future__ import annotations

import json
from pathlib import Path

from gallop import demo


def test_demo_runs_three_methods_labels_the_smoke_run_and_writes_artifacts(tmp_path: Path) -> None:
    from tests.conftest import make_tiny_fashion_mnist

    root = make_tiny_fashion_mnist(tmp_path / "fmnist", per_class=6)
    out = tmp_path / "out"
    argv = ["--data-root", str(root), "--out", str(out), "--weights-dir", str(tmp_path / "no_weights")]
    assert demo.main([*argv, "--shots", "2", "--epochs", "1", "--test-per-class", "2", "--threads", "1"]) == 0
    saved = json.loads((out / "gallop.json").read_text())
    assert saved["real_weights"] is False and set(saved["metrics"]) == {"zero-shot CLIP", "CoOp", "GalLoP"}
    md = (out / "gallop.md").read_text()
    assert "RANDOM INIT" in md and "fpr95_closest" in md  # labelled as a smoke run; GalLoP's FPR convention
    assert (out / "gallop_heatmaps.png").stat().st_size > 1000
    for name in ("coop", "gallop"):  # the report's training curves: one row per optimisation step
        rows = (out / "artifacts" / f"gallop_curve_{name}.csv").read_text().split()
        assert rows[0] == "step,loss" and len(rows) > 1
