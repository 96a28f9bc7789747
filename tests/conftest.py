"""Shared fixtures: the real Hydra configs composed for CPU and tiny sizes (lightning-hydra-template style),
tiny Fashion-MNIST files written in the official IDX format, and offline wandb."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from common.rehearsal.layouts import write_fashion_mnist, write_idx  # noqa: F401 (used by tests)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# Tests that call `make` inspect its output; under `make test` the parent's MAKEFLAGS/MAKELEVEL would make every
# child print "make[1]: Entering directory ...". Run child makes as top-level ones.
for _var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
    os.environ.pop(_var, None)
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

# the IDX writers live with the other official-format writers (tests and `make rehearse` share them)
make_tiny_fashion_mnist = write_fashion_mnist


@pytest.fixture(autouse=True)
def _records_in_tmp(monkeypatch, tmp_path_factory) -> None:
    """Result records of test runs go to a temporary folder, never into results/records."""
    monkeypatch.setenv("RESULTS_RECORDS_DIR", str(tmp_path_factory.mktemp("records")))


@pytest.fixture
def tiny_fmnist(tmp_path: Path) -> Path:
    """A data_dir holding ``fashion-mnist/`` with tiny IDX files."""
    make_tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    return tmp_path / "data"


def compose_train(overrides: list[str], output_dir: Path):
    """Compose configs/train.yaml with ``overrides``, forced to CPU, no workers, outputs in ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import common  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.trainer.accelerator = "cpu"
        cfg.extras.print_config = False
        if "num_workers" in cfg.data:
            cfg.data.num_workers = 0
        del cfg.hydra
    return cfg


def quiet_trainer(trainer_cfg: str, output_dir: Path, **kw):
    """A one-epoch Trainer from ``configs/trainer/<trainer_cfg>.yaml`` (e.g. ``cpu``, ``ddp_sim``) with no logger,
    checkpoints, bars, summary or sanity check; ``kw`` overrides any Trainer argument."""
    import hydra

    cfg = compose_train([f"trainer={trainer_cfg}"], output_dir)
    settings = dict(
        logger=False,
        max_epochs=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return hydra.utils.instantiate(cfg.trainer, **{**settings, **kw})


# the demos' overrides for a seconds-long run on tiny_fmnist (tests/roadmap/test_demo.py, tests/happier/test_demo.py)
TINY_DEMO_OVERRIDES = [
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "data.train_dataset.subset=null",
    "data.test_dataset.subset=null",
    "data.batch_size=16",
    "data.sampler.m=2",
]
