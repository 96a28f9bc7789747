"""The launcher on the real configs: config composition, a fast_dev_run of the demo experiment on CPU with CSV and
offline wandb loggers, eval-only from a checkpoint, and the errors a user meets first."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import open_dict

from common.launch import run
from common.losses.base import RetrievalLoss
from common.models.retrieval_module import NonFiniteLossError, RetrievalModule
from common.utils.config_check import ConfigError, check_overrides, group_options
from tests.conftest import CONFIG_DIR, compose_train

EXPERIMENTS = sorted(
    str(p.relative_to(CONFIG_DIR / "experiment").with_suffix("")) for p in (CONFIG_DIR / "experiment").rglob("*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", "logger=wandb"], tmp_path)
    assert cfg.data._target_ and cfg.model._target_ and cfg.trainer._target_
    # the keys a wandb dashboard groups and filters by
    wb = cfg.logger.wandb
    assert wb.job_type == ("train" if cfg.train else "eval")
    assert cfg.method == experiment.split("/")[0] and cfg.dataset
    if cfg.table is not None:
        assert cfg.row and wb.group == f"{cfg.method}/{cfg.table}" and wb.name == f"{cfg.row}-s{cfg.seed}"
    else:
        assert wb.group == experiment and wb.name == f"{experiment.split('/')[-1]}-s{cfg.seed}"


def test_group_options_listed():
    assert {"cpu", "ddp", "ddp_sim", "default", "gpu"} <= set(group_options("trainer"))
    assert {"csv", "many", "wandb"} <= set(group_options("logger"))
    assert {"fdr", "limit", "overfit"} <= set(group_options("debug"))


def test_unknown_config_key_and_option():
    with pytest.raises(ConfigError) as e:
        check_overrides(["trainer.max_epoch=3"])
    msg = str(e.value)
    assert "max_epoch" in msg and "trainer: cpu, ddp, ddp_sim, default, gpu" in msg
    with pytest.raises(ConfigError, match="Available options|logger: csv"):
        check_overrides(["logger=tensorboardx"])
    check_overrides(["trainer.max_epochs=3", "logger=csv"])  # valid: no error


def _demo_cfg(tmp_path: Path, data_dir: Path, extra: list[str] = (), fdr: bool = True):
    debug = ["debug=fdr"] if fdr else []
    cfg = compose_train(
        ["experiment=demo/fmnist_contrastive", "logger=many", *debug, f"paths.data_dir={data_dir}", *extra], tmp_path
    )
    with open_dict(cfg):
        cfg.data.train_dataset.subset = None
        cfg.data.test_dataset.subset = None
        cfg.data.batch_size = 20
        cfg.data.sampler.m = 2
        if "wandb" in (cfg.get("logger") or {}):
            cfg.logger.wandb.save_dir = str(tmp_path)
    return cfg


def test_fast_dev_run_demo(tmp_path, tiny_fmnist):
    cfg = _demo_cfg(tmp_path, tiny_fmnist, ["logger=csv"])
    metrics, objs = run(cfg)
    for key in ("test/recall@1", "test/map@r", "test/precision@1", "test/r_precision"):
        assert 0.0 <= metrics[key] <= 1.0
    assert objs["trainer"].global_step == 1


def test_short_run_logs_to_csv_and_offline_wandb(tmp_path, tiny_fmnist, monkeypatch):
    """fast_dev_run silences loggers, so this runs one short epoch to read the CSV and wandb files back."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _demo_cfg(tmp_path, tiny_fmnist, ["trainer.max_epochs=1", "+trainer.limit_train_batches=2"], fdr=False)
    metrics, _ = run(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/map@r"] == pytest.approx(metrics["test/map@r"])
    assert (tmp_path / "config_resolved.yaml").exists()
    # CSV logger
    csv_files = list(tmp_path.rglob("metrics.csv"))
    assert csv_files and "test/map@r" in csv_files[0].read_text().splitlines()[0]
    # wandb offline run files hold the logged metrics
    import wandb

    wandb.finish()
    from tests.helpers.wandb_offline import read_offline_run

    runs = list(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 1, "no offline wandb run written"
    for _ in range(20):  # wandb-core may still be flushing the record log after finish()
        logged = read_offline_run(runs[0])
        if "test/map@r" in logged["summary"]:
            break
        time.sleep(0.5)
    assert logged["summary"].get("test/map@r") == pytest.approx(metrics["test/map@r"]), (runs, logged)
    assert logged["run"]["project"] == "robust-retrieval" and logged["run"]["group"] == "demo/fmnist_contrastive"
    assert logged["run"]["job_type"] == "train" and logged["run"]["name"] == f"fmnist_contrastive-s{cfg.seed}"
    assert "demo" in logged["run"]["tags"]
    # top-level config keys that a dashboard groups and filters by
    config = logged["config"]
    assert config["method"] == "demo" and config["dataset"] == "fashion_mnist" and config["job_type"] == "train"
    assert config["backbone"] == cfg.model.net.backbone.name and "table" in config and "row" in config


def test_eval_only_from_checkpoint(tmp_path, tiny_fmnist):
    cfg = _demo_cfg(tmp_path, tiny_fmnist, ["logger=csv", "trainer.max_epochs=1"], fdr=False)
    metrics, _ = run(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    out2 = tmp_path / "eval"
    cfg2 = _demo_cfg(out2, tiny_fmnist, ["logger=csv", "train=false", f"ckpt_path={ckpt}"], fdr=False)
    metrics2, _ = run(cfg2)
    assert metrics2["test/map@r"] == pytest.approx(metrics["test/map@r"], abs=1e-6)


def _module(tmp_path, tiny_fmnist, policy):
    cfg = _demo_cfg(tmp_path, tiny_fmnist)
    with open_dict(cfg):
        cfg.model.nan_policy = policy
    return hydra.utils.instantiate(cfg.model)


class _NaNLoss(RetrievalLoss):
    def compute(self, inputs):
        return inputs.embeddings.sum() * float("nan")


def test_nan_loss_raises_with_indices_or_skips(tmp_path, tiny_fmnist):
    batch = {"image": torch.randn(4, 1, 28, 28), "label": torch.tensor([0, 0, 1, 1]), "index": torch.arange(4)}
    model: RetrievalModule = _module(tmp_path, tiny_fmnist, "raise")
    model.losses["contrastive"] = _NaNLoss()
    with pytest.raises(NonFiniteLossError, match=r"batch 7.*nan_policy=skip"):
        model.training_step(batch, 7)
    model = _module(tmp_path, tiny_fmnist, "skip")
    model.losses["contrastive"] = _NaNLoss()
    assert model.training_step(batch, 3) is None and model.skipped_batches == 1


def test_wrong_label_shape_in_training(tmp_path, tiny_fmnist):
    model = _module(tmp_path, tiny_fmnist, "raise")
    batch = {"image": torch.randn(2, 1, 28, 28), "label": torch.zeros(2, 1, 1, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"batch\['label'\] has shape \(2, 1, 1\)"):
        model.training_step(batch, 0)
