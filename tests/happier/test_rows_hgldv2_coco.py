"""The H-GLDv2 and multi-label COCO rows: settings, published table, make targets, and one training step + test of
every row on the tiny official layouts of the rehearsal (the same overrides as `make rehearse`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from common.data.datasets.coco_multilabel import read_instances
from common.data.datasets.gldv2 import load_retrieval_split
from common.launch import run
from common.rehearsal.layouts import write_coco, write_gldv2
from common.rehearsal.run import OVERRIDES
from common.results.published import load_published
from common.results.record import load_records
from tests.conftest import ROOT, compose_train

HGLDV2 = ["hgldv2_happier", "hgldv2_csl", "hgldv2_roadmap", "hgldv2_nsm"]
COCO = ["coco_happier", "coco_roadmap"]
# as the rehearsal's make variables (HGLDV2_LANDMARKS=8, COCO_QUERIES=8, COCO_TRAIN=32)
HGLDV2_TINY = ["hgldv2_landmarks=8"]
COCO_TINY = ["data.train_dataset.num_queries=8", "data.train_dataset.num_train=32"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rows") / "data"
    write_gldv2(root)
    write_coco(root)
    return root


def _cfg(row: str, out: Path, extra: list[str] = ()):
    return compose_train([f"experiment=happier/{row}", *extra], out)


def test_rows_settings(tmp_path) -> None:
    cfgs = {row: _cfg(row, tmp_path) for row in HGLDV2 + COCO}
    for row, cfg in cfgs.items():
        assert (cfg.table, cfg.row) == (row.split("_")[0], row)
        assert cfg.model.net.backbone.name == "resnet50.tv_in1k" and cfg.model.net.embed_dim == 512
        assert {"hap", "asi", "ndcg", "recall"} <= set(cfg.model.eval_metrics)
    h = cfgs["hgldv2_happier"]
    assert h.data.train_dataset._target_.endswith("GLDv2Train") and h.data.train_dataset.hierarchy_columns == [
        "hierarchical_label"
    ]
    assert h.data.query_dataset.hierarchy == "hgldv2/index_hierarchy.csv"
    assert dict(h.model.loss_weights) == {"sup_hap": 0.9, "cluster": 0.1} and h.model.scheduler.T_max == 30
    assert h.model.losses.cluster.num_classes == 81313 == cfgs["hgldv2_nsm"].model.losses.nsm.num_classes
    assert cfgs["hgldv2_csl"].model.losses.csl.num_proxies == 81313  # the landmarks of train_clean.csv
    assert cfgs["hgldv2_csl"].model.losses.csl.margins == [0.25, 0.45]  # one margin per level
    happier = cfgs["coco_happier"]
    assert happier.data.train_dataset._target_.endswith("COCOMultiLabel")
    assert list(happier.model.losses) == ["sup_hap"] and happier.model.losses.sup_hap.relevance == "pop"
    assert list(cfgs["coco_roadmap"].model.losses) == ["supap", "calibration"]


@pytest.mark.parametrize("row", COCO)
def test_coco_losses_take_multihot_labels(tmp_path, row) -> None:
    cfg = _cfg(row, tmp_path)
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(16, 80, generator=g) < 0.05
    labels[torch.arange(16), torch.arange(16) // 4] = True  # 4 labels x 4 images, as the sampler draws
    z = torch.randn(16, cfg.model.net.embed_dim, generator=g, requires_grad=True)
    total = sum(instantiate(loss)(z, labels) for loss in cfg.model.losses.values())
    total.backward()
    assert torch.isfinite(total) and z.grad.abs().sum() > 0


def test_published_tables_are_missing_and_cover_the_rows() -> None:
    pub = load_published(ROOT / "results" / "happier" / "published.yaml")
    for table, rows in (("hgldv2", HGLDV2), ("coco", COCO)):
        t = pub.tables[table]
        assert list(t.rows) == rows
        assert all(v is None for r in t.rows.values() for v in r.published.values())  # MISSING, never guessed
        assert [c.name for c in t.columns] == ["H-AP", "ASI", "NDCG", "AP", "mAP@R", "R@1"]
        assert "no" in pub.cite(t.source)  # the source says why nothing is published


def test_make_targets_run_every_row() -> None:
    env = {**os.environ, "HAPPIER_RUNS": "runs"}

    def dry(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout

    # one multirun per table (with hydra/launcher=slurm, one job per row) into runs/<dataset>/<row>
    out = dry("table-happier-hgldv2", "HGLDV2_LANDMARKS=8")
    assert '"hydra.sweep.dir=runs/hgldv2"' in out
    assert "experiment=" + ",".join(f"happier/{r}" for r in HGLDV2) + f" {HGLDV2_TINY[0]}" in out
    assert "common.results.collect --method happier" in out and "hgldv2_landmarks" not in dry("table-happier-hgldv2")
    out = dry("table-happier-coco", "COCO_QUERIES=8", "COCO_TRAIN=32")
    assert '"hydra.sweep.dir=runs/coco"' in out
    assert "experiment=" + ",".join(f"happier/{r}" for r in COCO) + f" {' '.join(COCO_TINY)}" in out
    assert "num_queries" not in dry("table-happier-coco")  # the data config's protocol sizes by default
    # one row by hand keeps its own run folder
    assert f'experiment=happier/{HGLDV2[0]} "hydra.run.dir=runs/{HGLDV2[0]}"' in dry(f"happier-row-{HGLDV2[0]}")


# the HAPPIER row of each table in the fast suite (a few seconds each), the baselines in the slow one
QUICK = {"hgldv2_happier", "coco_happier"}


@pytest.mark.parametrize("row", [r if r in QUICK else pytest.param(r, marks=pytest.mark.slow) for r in HGLDV2 + COCO])
def test_row_trains_one_step_and_fills_its_table_row(tmp_path, data_dir, row) -> None:
    load_retrieval_split.cache_clear(), read_instances.cache_clear()
    extra = [f"paths.data_dir={data_dir}", *OVERRIDES["retrieval"], *(COCO_TINY if row in COCO else HGLDV2_TINY)]
    metrics, objs = run(_cfg(row, tmp_path, extra))
    assert objs["trainer"].global_step == 1
    for key in ("hap", "asi", "ndcg", "recall@1", "map", "map@r"):
        assert 0.0 <= metrics[f"test/{key}"] <= 1.0, key
    assert ("test/level1/map" in metrics) == (row in HGLDV2)  # multi-label labels have no levels
    (record,) = load_records(os.environ["RESULTS_RECORDS_DIR"])
    assert (record.method, record.table, record.row) == ("happier", row.split("_")[0], row)
    assert record.metrics["hap"] == pytest.approx(metrics["test/hap"])
