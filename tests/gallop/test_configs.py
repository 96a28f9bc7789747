"""Every GalLoP experiment composes; the tiny-CLIP Fashion-MNIST experiment runs through common.launch."""

from __future__ import annotations

import hydra
import pytest
from omegaconf import open_dict

from common.launch import run
from gallop.model import CoOp, GalLoP, ZeroShotCLIP
from tests.conftest import CONFIG_DIR, compose_train

ROWS = sorted(p.stem for p in (CONFIG_DIR / "experiment" / "gallop").glob("*.yaml"))
DATASETS_16 = {
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
}


def test_all_eleven_datasets_have_a_16_shot_row():
    assert {r.removesuffix("_16shot") for r in ROWS if r.endswith("_16shot")} == DATASETS_16


@pytest.mark.parametrize("row", ROWS)
def test_gallop_experiment_composes(row, tmp_path):
    cfg = compose_train([f"experiment=gallop/{row}"], tmp_path)
    assert cfg.model._target_ == "gallop.module.GalLoPModule"
    assert cfg.data._target_ == "gallop.fewshot.FewShotDataModule"
    assert cfg.optimized_metric == "test/acc"
    if row.endswith("_16shot"):
        assert cfg.data.shots == 16
        epochs, batch = {"imagenet": (50, 128), "sun397": (200, 128), "eurosat": (200, 10)}.get(
            row.removesuffix("_16shot"), (200, 32)
        )
        assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (epochs, batch)
        assert cfg.model.optimizer.lr == 0.002 and cfg.model.optimizer.weight_decay == 0.01
        assert cfg.model.scheduler.T_max == epochs
        assert list(cfg.model.topk) == [5, 10, 15, 20] and cfg.model.prompt_dropout == 0.75


@pytest.mark.parametrize("model,cls", [("gallop", GalLoP), ("gallop_coop", CoOp), ("gallop_zeroshot", ZeroShotCLIP)])
def test_model_configs_instantiate_on_tiny_clip(model, cls, tmp_path):
    cfg = compose_train(
        [f"model={model}", "model.net.clip.model_name=tiny_clip", "model.net.clip.pretrained=null"], tmp_path
    )
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module.net, cls)


def test_fmnist_tiny_runs_through_the_launcher(tmp_path, tiny_fmnist):
    cfg = compose_train(
        ["experiment=gallop/fmnist_tiny", "debug=fdr", f"paths.data_dir={tiny_fmnist}", "logger=csv"], tmp_path
    )
    with open_dict(cfg):
        cfg.data.shots = 2
        cfg.data.test_dataset.subset = 3
    metrics, objs = run(cfg)
    assert 0.0 <= metrics["test/acc"] <= 100.0
    assert 0.0 <= metrics["test/ood/held_out/gl_mcm/auroc"] <= 1.0
    assert objs["trainer"].global_step == 1


def test_imagenet_data_config_wires_dg_and_ood_sets(tmp_path):
    from tests.gallop.test_data import _img, _write_imagenet

    _write_imagenet(tmp_path / "coop")
    for sub in ("iNaturalist/images", "SUN/images", "Places/images", "dtd/images/banded"):
        _img(tmp_path / "ood_data" / sub / "x.jpg")
    cfg = compose_train(["experiment=gallop/imagenet_16shot", f"paths.data_dir={tmp_path}"], tmp_path / "out")
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.class_names == ["tench", "goldfish", "great white shark"]
    assert [(s.kind, s.name) for s in dm.test_splits] == [
        ("id", "test"),
        ("ood", "inaturalist"),
        ("ood", "sun"),
        ("ood", "places"),
        ("ood", "textures"),
        ("domain", "imagenet_v2"),
        ("domain", "imagenet_sketch"),
        ("domain", "imagenet_a"),
        ("domain", "imagenet_r"),
    ]
    assert dm.domain_datasets["imagenet_a"].class_subset == [0, 2]
    dm.setup("fit")
    assert len(dm.train_dataset) == 3  # 16 shots of 1-image classes: all of each
    assert dm.test_dataset[0]["image"].shape == (3, 224, 224)
