"""The HEAT demo from its configs: the classifier, an EBM and the evaluation through the launcher's and heat.evaluate's
``run`` on tiny IDX files (in process), and ``python -m heat.demo`` end to end (records, summary, artifacts, offline
wandb runs)."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from common.launch import run as launch_run
from common.results.record import load_records
from heat.demo import ROWS, DemoFeatures, digits_28x28, main
from heat.evaluate import run as evaluate_run
from tests.conftest import compose_train, make_tiny_fashion_mnist
from tests.helpers.wandb_offline import read_offline_run

TINY = ["heat_demo.per_class=8", "trainer.max_epochs=1", "trainer.max_steps=2", "data.batch_size=16"]


def test_digits_far_ood_images():
    d = digits_28x28()
    assert d.shape == (1797, 28, 28) and d.dtype.name == "uint8"
    assert d[:, :4].max() == 0 and d[:, 4:24, 4:24].max() > 200  # MNIST-like framing: empty 4-pixel border


def _stage(experiment: str, runs: Path, data_dir: Path, seed: int = 0):
    stage = experiment.replace("/", "_")
    overrides = [f"experiment={experiment}", f"heat_demo.runs={runs}", f"paths.data_dir={data_dir}", "logger=csv"]
    return compose_train([*overrides, f"seed={seed}", *TINY], runs / stage / f"seed{seed}")


def test_stages_from_configs(tmp_path):
    """classifier -> HEAT-GMM -> evaluation, each from its config, chained by the checkpoint paths of heat_demo."""
    data = tmp_path / "data"
    make_tiny_fashion_mnist(data / "fashion-mnist", per_class=8)
    runs = tmp_path / "runs"
    metrics, _ = launch_run(_stage("heat/demo_fmnist_classifier", runs, data))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (runs / "heat_demo_fmnist_classifier" / "seed0" / "checkpoints" / "last.ckpt").is_file()

    cfg = _stage("heat/demo_fmnist_gmm", runs, data)
    state = torch.random.get_rng_state()
    dm = DemoFeatures(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    assert torch.equal(torch.random.get_rng_state(), state), "building the features moved the global RNG"
    assert len(dm.train_features) == 64 and [s.name for s in dm.test_splits] == ["test", "heldout", "digits_noise"]
    assert len(dm.val_ood[1]) == 1797 + 2 * 1000  # digits + Gaussian + uniform noise
    metrics, objs = launch_run(cfg)
    assert objs["trainer"].global_step == 2 and type(objs["model"].prior).__name__ == "GMM"
    assert {"test/heldout/auroc", "test/digits_noise/fpr95"} <= set(metrics)

    cfg = _stage("heat/demo_fmnist_eval", runs, data)
    cfg.heat_eval.heat_rows = {"heat_gmm": "heat/demo_fmnist_gmm"}
    cfg.heat_eval.compositions = {"heat": ["heat_gmm"], "priors_composed_no_ebm": ["el", "gmm", "gmm_std"]}
    res = evaluate_run(cfg)
    assert set(res) == {r for r in ROWS if r not in ("heat_el", "heat_gmm_std")}
    # near/far are the held-out classes and digits + noise themselves
    assert res["msp"]["near"]["auroc"] == res["msp"]["heldout"]["auroc"]
    assert res["knn_k50"]["far"]["fpr95"] == res["knn_k50"]["digits_noise"]["fpr95"]
    records = {r.row: r for r in load_records(Path(os.environ["RESULTS_RECORDS_DIR"]))}
    assert {"heat", "msp", "heat_gmm"} <= set(records) and records["heat"].table == "demo"
    assert set(records["msp"].metrics) >= {f"{s}/{k}" for s in ("near", "far") for k in ("fpr95", "auroc")}
    assert (runs / "heat_demo_fmnist_eval" / "seed0" / "scores_heat.npz").is_file()


def test_features_need_the_classifier_first(tmp_path):
    cfg = _stage("heat/demo_fmnist_el", tmp_path / "runs", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="experiment=heat/demo_fmnist_classifier"):
        DemoFeatures(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})


@pytest.mark.slow
def test_demo_end_to_end_on_tiny_idx_files(tmp_path, monkeypatch):
    make_tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist", per_class=8)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    payload = main(["--out", str(out), "--seeds", "0,1", *TINY])
    md = (out / "heat.md").read_text()
    assert md.count("\n| ") == 13  # header + 12 scorers
    assert "(n=2)" in payload["claim"]["detail"] and payload["claim"]["n_seeds"] == 2
    assert set(payload["composition_beats_every_single_scorer"]) == {
        "near_auroc",
        "near_fpr95",
        "far_auroc",
        "far_fpr95",
    }
    assert payload["sizes"]["train"] == 64 and payload["sizes"]["heldout"] == 8  # 4 test images per class
    # one result record per (scorer, seed), table demo, with the near/far metrics and the eval run's wandb id
    recs = sorted((out / "records" / "heat" / "demo").glob("*.json"))
    assert len(recs) == 24 and {"heat-s0.json", "heat-s1.json", "knn_k50-s1.json"} <= {p.name for p in recs}
    rec = json.loads((out / "records" / "heat" / "demo" / "heat-s1.json").read_text())
    assert {f"{s}/{k}" for s in ("near", "far") for k in ("fpr95", "fpr95_ood_positive", "auroc")} <= set(
        rec["metrics"]
    )
    # the report's pictures: each EBM's loss per step, the composition's and MSP's scores
    for prior in ("EL", "GMM", "GMM-std"):
        rows = (out / "artifacts" / f"heat_curve_{prior}.csv").read_text().split()
        assert rows[0] == "step,loss" and len(rows) == 3
    assert {p.name for p in (out / "artifacts").glob("heat_ood_*.npz")} == {
        "heat_ood_composition.npz",
        "heat_ood_msp.npz",
    }
    # every run logged to wandb (offline), in the group heat/demo, named <row>-s<seed>, train or eval
    runs = out / "runs" / "heat"
    (ebm,) = (runs / "heat_demo_fmnist_gmm" / "seed1").rglob("offline-run-*")
    (ev,) = (runs / "heat_demo_fmnist_eval" / "seed1").rglob(f"offline-run-*-{rec['wandb_run_id']}")
    for folder, job, name in ((ebm, "train", "heat_gmm-s1"), (ev, "eval", "eval-s1")):
        for _ in range(20):  # wandb-core may still be flushing the record log
            logged = read_offline_run(folder)
            if logged["run"] and logged["config"]:
                break
            time.sleep(0.5)
        assert (logged["run"]["group"], logged["run"]["job_type"], logged["run"]["name"]) == ("heat/demo", job, name)
        config = logged["config"]
        assert (config["method"], config["table"], config["dataset"]) == ("heat", "demo", "fashion-mnist-demo")
        assert config["backbone"] == "SmallCNN-w16" and config["row"] == name.rsplit("-", 1)[0]
