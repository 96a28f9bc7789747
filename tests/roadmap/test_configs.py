"""Experiment rows, loss/data configs, published.yaml and the demo helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from common.results.published import load_published
from roadmap import demo
from tests.common.test_datasets_cub import make_cub
from tests.common.test_datasets_inat import make_inat
from tests.common.test_datasets_inshop import make_inshop
from tests.common.test_datasets_sop import make_sop

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ROWS = sorted(p.stem for p in (CONFIGS / "experiment" / "roadmap").glob("*.yaml") if not p.stem.endswith("_base"))
PAPER_ROWS = [r for r in ROWS if not r.startswith("demo_fmnist")]


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        yield


def compose_row(row: str, overrides=()):
    return compose("train", overrides=[f"experiment=roadmap/{row}", *overrides])


@pytest.mark.parametrize("row", ROWS)
def test_row_composes_and_its_loss_runs(row):
    cfg = compose_row(row)
    assert "contrastive" not in cfg.model.losses, "the default contrastive loss must be replaced"
    assert set(cfg.model.loss_weights) <= set(cfg.model.losses)
    assert cfg.experiment_name == f"roadmap/{row}"
    assert "/" not in cfg.task_name
    dim = cfg.model.net.embed_dim or 384
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, dim, generator=g, requires_grad=True)
    y = torch.arange(4).repeat_interleave(4)
    for loss_cfg in cfg.model.losses.values():
        value = instantiate(loss_cfg)(z, y)
        assert torch.isfinite(value)
        value.backward()
    if cfg.model.get("memory"):
        assert OmegaConf.is_missing(cfg.model.memory, "weight"), (
            "the XBM weight is not published for these rows: must be set"
        )


def test_paper_settings_of_main_rows():
    sop = compose_row("sop_resnet50")
    assert sop.data.sampler._target_.endswith("HierarchicalBatchSampler") and sop.data.batch_size == 128
    assert sop.model.lr_backbone == 1e-5 and sop.model.lr_head == 2e-5 and sop.model.optimizer.weight_decay == 1e-4
    assert list(sop.model.scheduler.milestones) == [30, 70] and sop.model.scheduler.gamma == 0.3
    assert sop.trainer.max_epochs == 100 and sop.seed == 333
    assert sop.model.losses.supap.step.offset == 1.44 and sop.model.losses.supap.step.linear_mode == "x"
    assert dict(sop.model.loss_weights) == {"supap": 1.0, "calibration": 1.0}  # lambda 0.5, scale 2
    inat = compose_row("inat_resnet50")
    assert inat.data.batch_size == 384 and inat.model.losses.supap.step.start == 0.0
    assert inat.model.losses.supap.step.offset == 1.0
    cub = compose_row("cub_resnet50")
    assert cub.model.optimizer.lr == 1e-6 and cub.model.scheduler is None and cub.trainer.max_epochs == 200
    assert cub.model.net.pooling == "max" and cub.model.net.layer_norm
    tp = compose_row("tpami_sop_resnet50_roadmap")
    assert dict(tp.model.loss_weights) == {"supap": 0.9, "calibration": 0.1}  # lambda 0.1, scale 1
    nsm = compose_row("tpami_sop_resnet50_nsm")
    assert nsm.model.losses.nsm.num_classes == 11318 and nsm.model.loss_param_groups.nsm.lr == 10.0


def test_loss_group_override_switches_the_loss():
    cfg = compose_row("demo_fmnist", ["model/loss=roadmap_smoothap"])
    assert list(cfg.model.losses) == ["smoothap"] and cfg.model.losses.smoothap._target_ == "roadmap.losses.SmoothAP"
    assert not cfg.model.loss_weights


def _fixture_root(tmp_path, name):
    root = tmp_path / name
    root.mkdir()
    return root


@pytest.mark.parametrize("data", ["sop", "cub", "inat", "inshop"])
def test_data_configs_build_on_fixture_trees(tmp_path, data):
    if data == "sop":
        make_sop(_fixture_root(tmp_path, "Stanford_Online_Products"))
    elif data == "cub":
        make_cub(_fixture_root(tmp_path, "CUB_200_2011"), n_classes=200, per_class=1)
    elif data == "inat":
        make_inat(_fixture_root(tmp_path, "inaturalist"))
    else:
        make_inshop(_fixture_root(tmp_path, "inshop"))
    cfg = compose("train", overrides=[f"data={data}", f"paths.data_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    item = dm.train_dataset[0]
    assert item["image"].shape[0] == 3 and item["image"].ndim == 3
    if data in ("sop", "inshop"):
        assert dm.train_dataset.labels.ndim == 2  # [class, super-class] for the hierarchical sampler
    test = dm.test_dataset if data != "inshop" else dm.query_dataset
    assert test[0]["image"].shape[-1] == test[0]["image"].shape[-2]


@pytest.mark.parametrize(("row", "levels"), [("tpami_sop_resnet50_supndcg", 2), ("tpami_cub_resnet50_supndcg", 3)])
def test_tpami_ndcg_rows_train_on_every_hierarchy_level(tmp_path, row, levels):
    """The TPAMI NDCG rows feed [B, L] labels (SOP [product, category], CUB [species, family, order]) to a graded
    SupNDCG, as the original's NDCG configs; the loss on those labels differs from binary NDCG on column 0."""
    if "sop" in row:
        make_sop(_fixture_root(tmp_path, "Stanford_Online_Products"))
    else:
        make_cub(_fixture_root(tmp_path, "CUB_200_2011"), n_classes=200, per_class=1)
    cfg = compose_row(row, [f"paths.data_dir={tmp_path}"])
    labels = torch.as_tensor(instantiate(cfg.data.train_dataset).labels)
    assert labels.ndim == 2 and labels.shape[1] == levels
    loss = instantiate(cfg.model.losses.supndcg)
    assert loss.graded
    fine = torch.arange(8).repeat_interleave(4)
    batch = torch.stack([fine // 2**lv for lv in range(levels)], dim=1)  # nested [B, L] labels
    z = torch.randn(len(batch), 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(loss(z, batch).item() - type(loss)(graded=False)(z, batch).item()) > 1e-3


def test_published_yaml_covers_every_row_and_quotes_sources():
    pub = load_published(ROOT / "results" / "roadmap" / "published.yaml")
    rows = {r for t in pub.tables.values() for r in t.rows}
    assert {r for r in PAPER_ROWS if "current_supap" not in r} <= rows  # current_supap: not a paper row
    for table in pub.tables.values():
        for row in table.rows.values():
            for value in row.published.values():
                assert value is None or row.source in pub.sources, row
    assert pub.tables["main"].rows["sop_resnet50"].published == {"R@1": 83.1, "mAP@R": None}


def test_make_targets_name_existing_rows():
    mk = (ROOT / "mk" / "roadmap.mk").read_text()
    rows = re.search(r"ROADMAP_ROWS \?= (.*)", mk).group(1).split()
    assert all(r in ROWS for r in rows)
    for target in ("table-roadmap:", "report-roadmap:", "bench-roadmap:", "demo-roadmap:"):
        assert target in mk and "##" in mk.split(target, 1)[1].splitlines()[0]


def test_demo_rows_differ_by_their_loss_only_and_write_demo_records():
    cfgs = {row: compose_row(exp.split("/")[1]) for row, (exp, _) in demo.ROWS.items()}
    terms = {row: {k: v._target_ for k, v in c.model.losses.items()} for row, c in cfgs.items()}
    assert terms == {
        "roadmap": {"supap": "roadmap.losses.SupAP", "calibration": "roadmap.losses.CalibrationLoss"},
        "roadmap_smoothap": {"smoothap": "roadmap.losses.SmoothAP"},
        "roadmap_triplet": {"triplet": "roadmap.losses.TripletLoss"},
    }
    for row, c in cfgs.items():
        assert (c.table, c.row, c.method) == ("demo", row, "roadmap")
        assert "result_record" in c.callbacks and c.logger.wandb.job_type == "train"
        strip = OmegaConf.to_container(c, resolve=False)
        strip["model"].pop("losses"), strip["model"].pop("loss_weights", None), strip.pop("row")
        strip.pop("experiment_name")
        base = OmegaConf.to_container(cfgs["roadmap"], resolve=False)
        base["model"].pop("losses"), base["model"].pop("loss_weights", None), base.pop("row")
        base.pop("experiment_name")
        assert strip == base


def _records(values: dict[str, list[float]]):
    from common.results.record import ResultRecord

    return [
        ResultRecord("roadmap", "demo", row, seed, {"map@r": v, "recall@1": 0.7, "recall@10": 0.9})
        for row, vals in values.items()
        for seed, v in enumerate(vals)
    ]


def test_demo_verdict_from_seeds():
    recs = _records(
        {"roadmap": [0.50, 0.52, 0.51], "roadmap_smoothap": [0.45, 0.46, 0.47], "roadmap_triplet": [0.40, 0.41, 0.42]}
    )
    c = demo.claim(recs)
    assert c["holds"] and c["n_seeds"] == 3 and c["deltas"]["roadmap_smoothap"]["mean"] == pytest.approx(0.05)
    head = demo.headline(recs, c)
    assert head["ours"] == "ROADMAP 0.510 ± 0.008 (n=3)" and head["verdict"].startswith("claim holds over 3 seeds")
    # Smooth-AP ahead on one seed, behind on the others: within noise, so the claim does not hold
    recs = _records(
        {"roadmap": [0.50, 0.40, 0.45], "roadmap_smoothap": [0.40, 0.45, 0.45], "roadmap_triplet": [0.1] * 3}
    )
    c = demo.claim(recs)
    assert not c["holds"] and c["deltas"]["roadmap_smoothap"]["verdict"] == "within noise"
    one = demo.claim(_records({"roadmap": [0.5], "roadmap_smoothap": [0.4], "roadmap_triplet": [0.3]}))
    assert not one["holds"] and "rests on 1 seed(s) only" in one["detail"]
    assert demo.table(recs).count("\n") == 4
