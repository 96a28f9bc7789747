"""Every HAPPIER experiment row composes, its loss builds from config and runs, and the paper settings hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from common.results.published import load_published
from happier import demo

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ROWS = sorted(p.stem for p in (CONFIGS / "experiment" / "happier").glob("*.yaml") if not p.stem.endswith("_base"))
LEVELS = {"sop": 2, "inat_base": 2, "inat_full": 7, "dyml_vehicle": 3, "dyml_animal": 3, "dyml_product": 3, "demo": 2}
LEVELS |= {"hgldv2": 2, "coco": 2}  # coco: multi-label; its losses on multi-hot labels: test_rows_hgldv2_coco.py


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        yield


def _dataset(row: str) -> str:
    return next(k for k in LEVELS if row.startswith(k))


@pytest.mark.parametrize("row", ROWS)
def test_row_composes_and_its_loss_runs(row: str) -> None:
    cfg = compose("train", overrides=[f"experiment=happier/{row}"])
    assert cfg.experiment_name == f"happier/{row}"
    assert cfg.model._target_ == "common.models.retrieval_module.RetrievalModule"
    assert "contrastive" not in cfg.model.losses and set(cfg.model.loss_weights) <= set(cfg.model.losses)
    n_levels = LEVELS[_dataset(row)]
    g = torch.Generator().manual_seed(0)
    fine = torch.arange(4).repeat_interleave(4)
    labels = torch.stack([fine // (2**k) for k in range(n_levels)], dim=1)  # nested [B, L]
    z = torch.randn(16, cfg.model.net.embed_dim, generator=g, requires_grad=True)
    for name, loss_cfg in cfg.model.losses.items():
        loss = instantiate(loss_cfg)
        value = loss(z, labels)
        assert torch.isfinite(value)
        value.backward()
        assert z.grad.abs().sum() > 0
        # losses owning proxies get their own param group
        if any(True for _ in loss.parameters()):
            assert name in cfg.model.loss_param_groups


def test_paper_settings() -> None:
    animal = compose("train", overrides=["experiment=happier/dyml_animal_happier"]).model.loss_weights
    vehicle = compose("train", overrides=["experiment=happier/dyml_vehicle_happier"]).model.loss_weights
    assert animal.cluster == 0.5 and vehicle.cluster == 0.1  # lambda: 0.5 only for DyML-Animal
    assert animal.sup_hap == 0.5 and vehicle.sup_hap == 0.9  # 1 - lambda
    inat = compose("train", overrides=["experiment=happier/inat_full_happier"])
    assert inat.model.losses.sup_hap.step.start == 0.0 and inat.model.losses.sup_hap.step.offset == 1.0
    assert inat.data.train_dataset._target_.endswith("INatHierarchyDataset") and inat.data.train_dataset.levels == 7
    csl = compose("train", overrides=["experiment=happier/inat_full_csl"]).model.losses.csl
    assert len(csl.margins) == 7 and csl.scale == 32.0
    sop = compose("train", overrides=["experiment=happier/sop_happier"])
    assert sop.model.loss_param_groups.cluster.lr == 10.0 and sop.data.batch_size == 256
    assert sop.data.test_dataset.levels == 2 and "hap" in sop.model.eval_metrics
    assert sop.model.losses.sup_hap.step.offset == 1.44 and sop.model.losses.cluster.temperature == 0.05
    veh = compose("train", overrides=["experiment=happier/dyml_vehicle_happier", "dyml_benchmark=coarse"])
    assert veh.data.query_dataset.benchmark == "coarse" and veh.model.net.backbone.weights is None


def test_demo_configs_and_table() -> None:
    cfg = compose("train", overrides=["experiment=happier/demo_fmnist"])
    assert cfg.data.train_dataset.levels == 2 and cfg.data.test_dataset.levels == 2
    assert (
        list(cfg.model.losses) == ["sup_hap", "cluster"]
        and cfg.model.losses.sup_hap._target_ == "happier.losses.SupHAP"
    )
    rm = compose("train", overrides=["experiment=happier/demo_fmnist_roadmap"])
    assert (
        list(rm.model.losses) == ["supap", "calibration"] and rm.model.losses.supap._target_ == "roadmap.losses.SupAP"
    )
    assert list(rm.callbacks.retrieval_grid.query_idx) == list(cfg.callbacks.retrieval_grid.query_idx)
    assert (cfg.table, cfg.row, rm.table, rm.row) == ("demo", "happier", "demo", "roadmap")
    assert "result_record" in cfg.callbacks and cfg.logger.wandb.job_type == "train"
    from common.results.record import ResultRecord

    recs = [
        ResultRecord("happier", "demo", row, seed, {"hap": hap + 0.01 * seed, "asi": hap, "recall@1": 0.25})
        for row, hap in (("happier", 0.6), ("roadmap", 0.5))
        for seed in (0, 1, 2)
    ]
    md = demo.table(recs, "make demo-happier", [0, 1, 2])
    assert "| H-AP | 61.00 ± 0.82 (n=3) | 51.00 ± 0.82 (n=3) |" in md and "| NDCG | n/a | n/a |" in md
    c = demo.claim(recs)
    assert c["holds"] and c["deltas"]["hap"]["mean"] == pytest.approx(0.1) and c["n_seeds"] == 3


def test_published_yaml_has_sources_and_marks_missing() -> None:
    pub = load_published(ROOT / "results" / "happier" / "published.yaml")
    for table in pub.tables.values():
        for row in table.rows.values():
            if any(v is not None for v in row.published.values()):
                assert pub.cite(row.source).startswith("https://"), row  # every found value names its source
    assert pub.tables["dyml_vehicle"].rows["dyml_vehicle_happier"].published["Average-mAP"] == 37.0
    assert pub.tables["sop"].rows["sop_happier"].published["R@1"] == 81.0
    assert pub.tables["sop"].rows["sop_happier"].published["H-AP"] is None  # MISSING, never guessed


def test_proxies_get_their_own_param_group_and_are_checkpointed() -> None:
    cfg = compose("train", overrides=["experiment=happier/demo_fmnist"])
    model = instantiate(cfg.model)
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    group = next(g for g in opt.param_groups if g.get("name") == "loss/cluster")
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0
    assert [p.shape for p in group["params"]] == [torch.Size([10, cfg.model.net.embed_dim])]
    assert "losses.cluster.proxies" in model.state_dict()
