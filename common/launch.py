"""The one entry point: ``python -m common.launch experiment=<method>/<name> [hydra overrides]``.

Steps: check the overrides and the types of the values (a typo gets the valid options of its group, a wrong type a
one-line error; nothing is created), resolve ``ckpt_path`` (``last`` = the newest run of the same experiment; a
checkpoint of a run of the same experiment continues in that run's folder), claim a unique run folder, seed
everything, instantiate data, model, callbacks, loggers and trainer from ``_target_``, run ``fit`` then ``test`` (or
``test`` alone with ``train=false ckpt_path=...``), write the resolved config and ``metrics.json`` (strict JSON:
undefined values are ``null``) into the run folder, print a metrics table, and return ``cfg.optimized_metric`` for
sweepers.

Every run folder holds ``status.json`` (running / completed / failed / interrupted; :mod:`common.utils.runs`).
SIGTERM and SIGINT save a mid-epoch checkpoint, exit with ``128 + signal`` and print the command that resumes the run
(:mod:`common.callbacks.interrupt`). docs/runs.md explains it for users.
"""

from __future__ import annotations

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
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import common  # noqa: F401  (registers resolvers)
from common.utils.config_check import ConfigError, check_overrides, check_types, multirun_overrides
from common.utils.instantiate import default_wandb_mode, instantiate_callbacks, instantiate_loggers
from common.utils.rich_utils import print_config_tree, print_metrics_table
from common.utils.run_folder import (
    continuation_dir,
    hydra_quote,
    next_resume_subdir,
    release_run_folder,
    resolve_last_checkpoint,
)
from common.utils.run_tracker import RunTracker
from common.utils.runs import newest_checkpoint, write_metrics

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


class UndefinedMetricError(RuntimeError):
    """The run's test metric (``optimized_metric``) came out undefined (NaN), e.g. no test query has a match."""


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


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path`` with ``last`` resolved (:func:`common.utils.run_folder.resolve_last_checkpoint`) and a
    missing file reported; raises :class:`ConfigError`."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        return None
    ckpt = str(ckpt)
    if ckpt == "last":
        try:
            return str(
                resolve_last_checkpoint(Path(cfg.paths.log_dir) / str(cfg.task_name), cfg.get("experiment_name"))
            )
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
    if ckpt in ("best", "hpc", "registry") or "://" in ckpt:
        return ckpt
    if not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such file")
    return str(Path(ckpt).resolve())


def start_loggers(cfg: DictConfig) -> list[Logger]:
    """The run's loggers (``cfg.logger``; wandb offline unless a mode or credentials say otherwise), each given the
    resolved config as hyper-parameters: the top-level keys (method, dataset, backbone, table, row, job_type) are
    what a wandb dashboard groups and filters by."""
    if cfg.get("logger") and any("wandb" in str(c.get("_target_", "")).lower() for c in cfg.logger.values()):
        default_wandb_mode()
    loggers = instantiate_loggers(cfg.get("logger"))
    hparams = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(hparams)
    return loggers


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and/or test as the config says; return ``(metrics, objects)``.

    Raises :class:`ConfigError` (before anything is built or written) for values of the wrong type or a
    ``ckpt_path`` that does not resolve, :class:`UndefinedMetricError` when the test metric is undefined (unless
    ``allow_undefined_metrics=true``), and :class:`~common.callbacks.interrupt.RunInterrupted` on SIGTERM/SIGINT.
    """
    check_types(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    out_dir = Path(cfg.paths.output_dir)
    tracker = RunTracker(
        out_dir,
        experiment=cfg.get("experiment_name"),
        task_name=cfg.get("task_name"),
        ckpt_path=ckpt_path if cfg.get("train", True) else None,
    )
    with tracker:
        if tracker.mode == "requeue" and ckpt_path is None and cfg.get("train", True):
            found = newest_checkpoint(out_dir)  # the same SLURM job again: continue from its newest checkpoint
            ckpt_path = str(found) if found is not None else None
            log.info("requeued SLURM job: resuming from %s", ckpt_path or "scratch (no checkpoint yet)")
        return _run(cfg, out_dir, ckpt_path, tracker)


def _run(
    cfg: DictConfig, out_dir: Path, ckpt_path: str | None, tracker: RunTracker
) -> tuple[dict[str, float], dict[str, Any]]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.extras.get("print_config"):
        print_config_tree(cfg, resolve=False)
    if cfg.extras.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.extras.matmul_precision)
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = start_loggers(cfg)
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_logged(trainer))
    if cfg.get("test", True):
        if cfg.get("train", True):
            ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            if cfg.get("test_ckpt") == "last" or (ckpt is None and trainer.checkpoint_callback is not None):
                ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
            if cfg.trainer.get("fast_dev_run"):
                ckpt = None
        else:
            ckpt = ckpt_path
            if ckpt is None:
                raise ValueError("train=false needs ckpt_path=<checkpoint> to evaluate")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(_logged(trainer))

    if trainer.is_global_zero:
        tracker.undefined_metrics = write_metrics(out_dir / "metrics.json", metrics)
        if tracker.undefined_metrics:
            log.warning(
                "%d of %d metrics are undefined (NaN or inf), written as null in metrics.json: %s",
                len(tracker.undefined_metrics),
                len(metrics),
                ", ".join(tracker.undefined_metrics),
            )
        print_metrics_table({k: v for k, v in metrics.items() if k.startswith("test/")} or metrics, title=str(out_dir))
    _check_optimized_metric(cfg, metrics)
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "loggers": loggers}


def _check_optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> None:
    name = cfg.get("optimized_metric")
    if not name or not cfg.get("test", True) or name not in metrics or math.isfinite(metrics[name]):
        return
    msg = (
        f"the test metric {name} is undefined ({metrics[name]}): the evaluation had nothing to score (e.g. no test "
        f"query has a relevant item in the gallery; see the warning above). metrics.json holds null for it."
    )
    if cfg.get("allow_undefined_metrics", False):
        log.warning("%s Accepted (allow_undefined_metrics=true).", msg)
        return
    raise UndefinedMetricError(f"{msg} Fix the test set, or pass allow_undefined_metrics=true to accept it.")


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
    except ConfigError as e:
        from hydra.core.hydra_config import HydraConfig

        release_run_folder(HydraConfig.get().runtime.output_dir, error=str(e))
        print(e, file=sys.stderr)
        sys.exit(2)
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


# ---------------------------------------------------------------------------------------------- command line
def precheck(overrides: list[str]) -> list[str]:
    """Check the overrides of a single run before Hydra starts; return them with ``ckpt_path`` resolved and, for a
    resume, the run folder it continues (``hydra.run.dir``). Raises :class:`ConfigError`."""
    from hydra.core.hydra_config import HydraConfig

    cfg = check_overrides(overrides)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in experiment_name
    check_types(cfg)
    ckpt = resolve_ckpt_path(cfg)
    if ckpt is None or ckpt in ("best", "hpc", "registry") or "://" in ckpt:
        return overrides
    out = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "ckpt_path"] + [f"ckpt_path={hydra_quote(ckpt)}"]
    sets_dir = any(o.startswith("hydra.run.dir=") for o in overrides)
    folder = continuation_dir(ckpt, cfg.get("experiment_name")) if cfg.get("train", True) and not sets_dir else None
    if folder is not None:
        log.info("resuming: the run continues in %s", folder)
        out += [f"hydra.run.dir={hydra_quote(str(folder))}", f"hydra.output_subdir={next_resume_subdir(folder)}"]
    return out


def cli(argv: list[str] | None = None) -> None:
    """``python -m common.launch``: the pre-check of :func:`precheck` (single runs) or of
    :func:`~common.utils.config_check.multirun_overrides` (multiruns over experiments), then Hydra."""
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = get_args_parser().parse_known_args(argv)
    meta = (
        args.multirun,
        args.shell_completion,
        args.help,
        args.hydra_help,
        args.cfg,
        args.info,
        args.experimental_rerun,
        args.config_name not in (None, "train", "train.yaml"),
    )
    flags = [a for a in argv if a not in args.overrides]
    try:
        if not any(meta):
            argv = [*flags, *precheck(list(args.overrides))]
        elif args.multirun and not any(meta[1:]):  # keys that only the swept experiments have
            argv = [*flags, *multirun_overrides(list(args.overrides))]
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
