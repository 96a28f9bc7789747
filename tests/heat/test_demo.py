import json
from pathlib import Path

import pytest

from heat.demo import default_data_dir, digits_28x28, main


def test_digits_far_ood_images():
    d = digits_28x28()
    assert d.shape == (1797, 28, 28) and d.dtype.name == "uint8"
    assert d[:, :4].max() == 0 and d[:, 4:24, 4:24].max() > 200  # MNIST-like framing: empty 4-pixel border


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path):
    if (
        not (default_data_dir() / "train-labels-idx1-ubyte.gz").exists()
        and not (default_data_dir() / "train-labels-idx1-ubyte").exists()
    ):
        pytest.skip("Fashion-MNIST not available: run `make data-fashion-mnist`")
    out = main(
        [
            "--out-dir",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--per-class",
            "60",
            "--epochs",
            "1",
            "--ebm-steps",
            "3",
            "--ebm-batch",
            "64",
            "--seeds",
            "0",
        ]
    )
    saved = json.loads(Path(tmp_path / "heat.json").read_text())
    assert saved["runs"][0]["results"].keys() == out["runs"][0]["results"].keys()
    assert {"HEAT-EL", "HEAT-GMM", "HEAT-GMM-std", "MSP", "KNN (k=50)"} <= set(saved["runs"][0]["results"])
    for r in saved["runs"][0]["results"].values():
        assert 0.0 <= r["near"]["auroc"] <= 1.0 and 0.0 <= r["far"]["fpr95"] <= 1.0
    assert "| scorer |" in (tmp_path / "heat.md").read_text()


def test_demo_runs_on_tiny_idx_files(tmp_path):
    from tests.conftest import make_tiny_fashion_mnist

    root = make_tiny_fashion_mnist(tmp_path / "fmnist", per_class=8)
    out = main(
        [
            "--data-dir",
            str(root),
            "--out-dir",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--per-class",
            "8",
            "--epochs",
            "1",
            "--ebm-steps",
            "2",
            "--ebm-batch",
            "16",
            "--seeds",
            "0,1",
        ]
    )
    assert out["runs"][0]["n_id_train"] == 64 and out["runs"][0]["near_ood"]["n"] == 8
    assert set(out["composition_beats_every_single_scorer"]) == {"near_auroc", "near_fpr95", "far_auroc", "far_fpr95"}
    md = (tmp_path / "out" / "heat.md").read_text()
    assert md.count("\n| ") == 13  # header + 12 scorers
    assert "(n=2)" in out["claim"]["detail"] and out["claim"]["n_seeds"] == 2
    # one result record per (scorer, seed), table demo, with the near/far metrics
    recs = sorted((tmp_path / "out" / "records" / "heat" / "demo").glob("*.json"))
    assert len(recs) == 24 and {"heat-s0.json", "heat-s1.json", "knn_k50-s1.json"} <= {p.name for p in recs}
    assert set(json.loads(recs[0].read_text())["metrics"]) == {
        f"{s}/{k}" for s in ("near", "far") for k in ("fpr95", "fpr95_ood_positive", "auroc")
    }
    # one cache entry (sidecar) per image set and seed: ID train/test, near, three far sets
    assert len(list((tmp_path / "cache").glob("*.json"))) == 12
    # the report's training curves: the contrastive-divergence loss of each EBM at every step
    for prior in ("EL", "GMM", "GMM-std"):
        rows = (tmp_path / "out" / "artifacts" / f"heat_curve_{prior}.csv").read_text().split()
        assert rows[0] == "step,loss" and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
