"""End to end on a fixture CIFAR tree: heat.extract (backbone once) -> cached features -> heat.evaluate records, and
the evaluation's offline wandb run read back (job_type eval, group heat/<table>, name <row>-s<seed>, top-level keys)."""

import json
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

import common.config.resolvers  # noqa: F401
from common.results.record import load_records
from heat.datamodule import FeatureDataModule
from heat.evaluate import run
from heat.extract import extract_all
from tests.conftest import compose_train
from tests.heat.test_readers import _cifar_batch
from tests.helpers.wandb_offline import read_offline_run


def test_extract_then_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_RECORDS_DIR", str(tmp_path / "records"))
    base = tmp_path / "data" / "cifar-10-batches-py"
    for i in range(1, 6):
        _cifar_batch(base / f"data_batch_{i}", 12, [j % 3 for j in range(12)], seed=i)
    _cifar_batch(base / "test_batch", 9, [j % 3 for j in range(9)], seed=9)
    _cifar_batch(tmp_path / "data" / "cifar-100-python" / "test", 8, [1] * 8, coarse=[0] * 8, seed=10)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(
        [
            "experiment=heat/cifar10_eval",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path / "run",
    )
    OmegaConf.set_struct(cfg, False)
    cfg.extract.backbone = {
        "_target_": "heat.backbones.create_classifier",
        "name": "resnet18",
        "num_classes": 3,
        "cifar_stem": True,
        "checkpoint": None,
    }
    cfg.extract.transform.size = 16  # a 2x2 layer4 map keeps the test fast
    cfg.data.val_ood = [cfg.data.val_ood[0]]  # CIFAR-100 only
    cfg.data.ood_names = ["cifar100"]
    cfg.heat_eval.near, cfg.heat_eval.far = ["cifar100"], []
    cfg.heat_eval.out_dir = str(tmp_path / "results")
    cfg.heat_eval.baselines = {
        "msp": {"_target_": "heat.scorers.logits.MSP"},
        "knn": {"_target_": "heat.scorers.knn.KNN", "k": 3},
    }
    done = extract_all(cfg, device="cpu")
    assert done == ["cifar10/train", "cifar10/test", "cifar100/test"]
    sidecars = sorted((tmp_path / "cache" / "heat_features").glob("*.json"))
    assert len(sidecars) == 3 and all(json.loads(s.read_text())["complete"] for s in sidecars)
    dm = FeatureDataModule(
        **{k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "_target_"}
    )
    assert dm.train_features.avg.shape == (60, 512) and dm.val_ood[0].labels is not None
    assert np.isfinite(dm.train_features.std.numpy()).all()
    res = run(cfg)
    # no HEAT rows without checkpoints; the prior rows and the mixture-energy rows
    assert set(res) == {"msp", "knn", "EL", "GMM", "GMM-std", "GMM-energy", "GMM-std-energy"}
    assert res["msp"]["near"]["auroc"] == pytest.approx(res["msp"]["cifar100"]["auroc"])
    assert res["msp"]["average"]["fpr95"] == pytest.approx(res["msp"]["cifar100"]["fpr95"])  # one OOD set here
    out = json.loads((tmp_path / "results" / "cifar10.json").read_text())
    assert len(out["missing_heat_rows"]) == 3 and "HEAT-GMM" in out["missing_heat_rows"][1]
    records = {r.row: r for r in load_records(tmp_path / "records")}
    assert set(records) == {f"cifar10_{s}" for s in res}  # one record per scorer, row <row>_<scorer>
    knn = records["cifar10_knn"]
    assert (knn.method, knn.table, knn.dataset) == ("heat", "cifar10", "cifar10")
    assert knn.protocol == {"precision": "32-true"}  # the tables say which precision made each number
    assert knn.metrics["cifar100/auroc"] == pytest.approx(res["knn"]["cifar100"]["auroc"])
    assert knn.metrics["average/fpr95"] == pytest.approx(res["knn"]["cifar100"]["fpr95"])  # one set: its own mean
    # the evaluation's offline wandb run: an eval job in the table's group, named <row>-s<seed>, with the top-level keys
    assert knn.wandb_run_id
    (run_dir,) = (tmp_path / "run").rglob(f"offline-run-*-{knn.wandb_run_id}")
    for _ in range(20):  # wandb-core may still be flushing the record log after finish()
        logged = read_offline_run(run_dir)
        if "test/knn/cifar100/auroc" in logged["summary"]:
            break
        time.sleep(0.5)
    assert logged["run"]["job_type"] == "eval" and logged["run"]["group"] == "heat/cifar10"
    assert logged["run"]["name"] == "cifar10-s0" and logged["run"]["project"] == "robust-retrieval"
    config = logged["config"]
    assert (config["method"], config["table"], config["row"], config["job_type"]) == (
        "heat",
        "cifar10",
        "cifar10",
        "eval",
    )
    assert config["dataset"] == "heat_cifar10" and config["backbone"] == "resnet34-cifarstem"
    assert logged["summary"]["test/knn/cifar100/auroc"] == pytest.approx(res["knn"]["cifar100"]["auroc"])
