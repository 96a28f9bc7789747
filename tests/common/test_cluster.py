"""SLURM launcher configs (dry run of the generated job), Hydra sweeps and wandb sweep files."""

from __future__ import annotations

import pytest
import yaml

from common.utils.config_check import check_overrides
from tests.conftest import CONFIG_DIR, compose_train

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [cluster] extra")


def test_slurm_dry_run_shows_the_job():
    from common.slurm import dry_run

    text = dry_run(
        [
            "experiment=demo/fmnist_contrastive",
            "hydra/launcher=slurm_4gpu",
            "trainer=ddp",
            "slurm.partition=gpu_p2",
            "slurm.account=xyz@v100",
            "slurm.time_min=600",
        ]
    )
    for line in (
        "--partition=gpu_p2",
        "--account=xyz@v100",
        "--time=600",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--signal=USR1@90",
        "--nodes=1",
    ):
        assert f"#SBATCH {line}" in text, line
    assert "submitit.core._submit" in text and "experiment=demo/fmnist_contrastive" in text
    multi = dry_run(["experiment=demo/fmnist_contrastive", "hydra/launcher=slurm_multinode", "slurm.partition=p"])
    assert "#SBATCH --nodes=2" in multi
    one = dry_run(["experiment=demo/fmnist_contrastive", "hydra/launcher=slurm", "slurm.partition=p"])
    assert "#SBATCH --gpus-per-node=1" in one and "--account" not in one
    with pytest.raises(ValueError, match="SLURM launcher"):
        dry_run(["experiment=demo/fmnist_contrastive"])


def test_hydra_sweeps_compose():
    for path in sorted((CONFIG_DIR / "hparams_search").glob("*.yaml")):
        check_overrides([f"hparams_search={path.stem}"])


def test_wandb_sweeps_drive_the_launcher_with_valid_overrides():
    files = sorted((CONFIG_DIR / "sweep" / "wandb").glob("*.yaml"))
    assert files
    for path in files:
        sweep = yaml.safe_load(path.read_text())
        assert "common.launch" in sweep["command"] and "${args_no_hyphens}" in sweep["command"]
        overrides = []
        for key, spec in sweep["parameters"].items():
            value = spec["value"] if "value" in spec else spec["values"][0]
            overrides.append(f"{key}={value}")
        check_overrides(overrides)  # raises on an unknown key


def test_dashboard_keys_in_config(tmp_path):
    cfg = compose_train(["experiment=demo/fmnist_contrastive", "logger=wandb"], tmp_path)
    assert cfg.experiment_name == "demo/fmnist_contrastive" and cfg.method == "demo"
    assert cfg.logger.wandb.group == "demo/fmnist_contrastive"
    assert cfg.logger.wandb.project == "robust-retrieval" and cfg.logger.wandb.job_type == "train"
    assert "fashion_mnist" in cfg.logger.wandb.tags
