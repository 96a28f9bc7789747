"""The demo's run-folder exporter: embeddings and loss curves that `make report` plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.report.artifacts import export_retrieval_run, loss_curve_from_metrics_csv


def _fake_run(run_dir: Path) -> None:
    rng = np.random.default_rng(0)
    run_dir.mkdir(parents=True)
    np.savez_compressed(
        run_dir / "test_embeddings.npz",
        embeddings=(3.0 * rng.normal(size=(20, 8))).astype(np.float32),
        labels=np.repeat(np.arange(5), 4),
        num_queries=20,
    )
    csv_dir = run_dir / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    # Lightning's CSV logger: one row per logging call, blank cells for the other keys (test rows have no loss)
    (csv_dir / "metrics.csv").write_text(
        "epoch,step,test/map@r,train/loss\n0,4,,1.5\n0,9,,1.25\n1,14,,0.75\n1,15,0.5,\n"
    )


def test_export_writes_normalised_embeddings_and_the_loss_curve(tmp_path: Path) -> None:
    _fake_run(tmp_path / "run")
    names = export_retrieval_run(tmp_path / "run", tmp_path / "art", "roadmap", "triplet")
    assert names == {"embeddings": "roadmap_retrieval_triplet.npz", "curve": "roadmap_curve_triplet.csv"}
    data = np.load(tmp_path / "art" / names["embeddings"])
    assert data["embeddings"].dtype == np.float16 and data["embeddings"].shape == (20, 8)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"].astype(np.float64), axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(data["labels"], np.repeat(np.arange(5), 4))
    lines = (tmp_path / "art" / names["curve"]).read_text().split()
    assert lines == ["step,loss", "4,1.5", "9,1.25", "14,0.75"]


def test_loss_curve_needs_a_loss_column(tmp_path: Path) -> None:
    f = tmp_path / "metrics.csv"
    f.write_text("epoch,step,val/acc\n0,1,0.5\n")
    with pytest.raises(ValueError, match="no training-loss column"):
        loss_curve_from_metrics_csv(f)


def test_missing_embeddings_name_the_option(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="save_test_embeddings=true"):
        export_retrieval_run(tmp_path / "run", tmp_path / "art", "roadmap", "x")
