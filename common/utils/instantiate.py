"""Build callbacks and loggers from their config groups (dicts of ``_target_`` entries)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None, kind: type) -> list:
    """Instantiate every ``_target_`` entry of a dict config; None or empty gives ``[]``."""
    objs: list = []
    if not cfg:
        return objs
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"expected a dict of {kind.__name__} configs, got {type(cfg).__name__}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            obj = hydra.utils.instantiate(conf)
            if not isinstance(obj, kind):
                raise TypeError(f"'{name}' built a {type(obj).__name__}, not a {kind.__name__}")
            objs.append(obj)
    return objs


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return instantiate_group(cfg, Callback)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return instantiate_group(cfg, Logger)


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def default_wandb_mode() -> str:
    """Offline unless a mode is set or credentials exist (then wandb's own default, online)."""
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")
