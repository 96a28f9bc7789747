"""The one entry point: ``python -m common.launch experiment=<method>/<name> [hydra overrides]``.

Steps: check the overrides (a typo gets the valid options), seed everything, instantiate data, model, callbacks,
loggers and trainer from ``_target_``, run ``fit`` then ``test`` (or ``test`` alone with ``train=false
ckpt_path=...``), write the resolved config and ``metrics.json`` into the run directory, print a metrics table,
and return ``cfg.optimized_metric`` for sweepers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

import common  # noqa: F401  (registers resolvers)
from common.utils.config_check import ConfigError, check_overrides
from common.utils.instantiate import default_wandb_mode, instantiate_callbacks, instantiate_loggers
from common.utils.rich_utils import print_config_tree, print_metrics_table

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def _to_float(v: Any) -> float | None:
    try:
        f = float(v.item() if isinstance(v, torch.Tensor) else v)
    except (TypeError, ValueError):
        return None
    return f


def _logged(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's logged scalars as floats."""
    values = {k: _to_float(v) for k, v in trainer.callback_metrics.items()}
    return {k: v for k, v in values.items() if v is not None}


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and/or test as the config says; return ``(metrics, objects)``."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.extras.get("print_config"):
        print_config_tree(cfg, resolve=False)
    if cfg.extras.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.extras.matmul_precision)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if cfg.get("logger") and any("wandb" in str(c.get("_target_", "")).lower() for c in cfg.logger.values()):
        default_wandb_mode()
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    hparams = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(hparams)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_logged(trainer))
    if cfg.get("test", True):
        if cfg.get("train", True):
            ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            if cfg.get("test_ckpt") == "last" or (ckpt is None and trainer.checkpoint_callback is not None):
                ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
            if cfg.trainer.get("fast_dev_run"):
                ckpt = None
        else:
            ckpt = cfg.get("ckpt_path")
            if ckpt is None:
                raise ValueError("train=false needs ckpt_path=<checkpoint> to evaluate")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(_logged(trainer))

    if trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        print_metrics_table({k: v for k, v in metrics.items() if k.startswith("test/")} or metrics, title=str(out_dir))
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "loggers": loggers}


def finish_loggers() -> None:
    """Close a wandb run even after a crash, so a multirun can go on (lightning-hydra-template's task_wrapper)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics, _ = run(cfg)
    finally:
        finish_loggers()
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        if cfg.get("test", True):
            raise KeyError(f"optimized_metric '{name}' was not logged; logged metrics: {sorted(metrics)}")
        log.warning("optimized_metric '%s' not logged (test=false); returning None", name)
        return None
    value = metrics[name]
    return value if math.isfinite(value) else None


def cli() -> None:
    args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    if "-m" not in sys.argv and "--multirun" not in sys.argv and not any(a.startswith("--") for a in sys.argv[1:]):
        try:
            check_overrides(args)
        except ConfigError as e:
            print(e, file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
