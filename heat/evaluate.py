"""The HEAT evaluation: baselines, priors, HEAT-* and the compositions on cached features, near/far OOD.

``python -m heat.evaluate experiment=heat/cifar10_eval`` (``make table-heat``). For one ID dataset it builds the
feature datamodule ``data`` (cached train / test / OOD features; extract them with ``python -m heat.extract``), fits
every scorer of ``heat_eval.baselines`` and ``heat_eval.priors``, restores the trained HEAT rows from
``heat_eval.heat_checkpoints`` (missing ones are skipped and named), composes them (``heat_eval.compositions``, beta =
``heat_eval.beta``), and scores each OOD set with ``common.metrics.ood.ood_metrics``. Output: per-set, near/far and
all-set ("average", HEAT's own mean) values of FPR95 (ID positive, HEAT's convention), FPR95 with OOD positive
(OpenOOD v1.5) and AUROC:

- one result record per scorer (``common.results.record``, row ``heat_eval.record_row``, default
  ``<row>_<scorer>``, metric keys ``<ood set>/<fpr95|fpr95_ood_positive|auroc>``), with the wandb run id;
- the raw numbers (and the number of items of each set) as JSON in ``heat_eval.out_dir`` (and ``scores_<scorer>.npz`` for the scorers named in
  ``heat_eval.save_scores``);
- the run's loggers (``cfg.logger``; the eval experiments use csv + wandb, offline unless WANDB_MODE says otherwise):
  the resolved config (top-level keys method, dataset, backbone, table, row, ``job_type: eval``; wandb group
  ``heat/<table>``, run name ``<row>-s<seed>``) and every number as ``test/<scorer>/<set>/<key>``.

``make tables`` turns the records into the table. The prior rows "EL", "GMM" and "GMM-std" are the paper's
stand-alone priors as the released code scores them (the energy of the logits; the minimum squared Mahalanobis
distance, SSD+, on L2-normalised avg / std features); the mixture energies that HEAT-GMM / HEAT-GMM-std correct are
the separate rows "GMM-energy" and "GMM-std-energy". All are configured in ``heat_eval.priors``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import hydra
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

import common.config.resolvers  # noqa: F401
from common.callbacks.result_record import command_line
from common.launch import finish_loggers, start_loggers
from common.metrics.ood import ood_metrics
from common.results.record import write_record
from heat.features import Features
from heat.module import HEATModule
from heat.scorers.combine import Combine

log = logging.getLogger(__name__)
KEYS = ("fpr95", "fpr95_ood_positive", "auroc")
#: the paper's "Average" column: the mean over every OOD set of the table (HEAT's CIFAR tables average all 6)
AVERAGE = "average"


def evaluate_scorers(
    scorers: Mapping[str, object],
    id_test: Features,
    ood: Mapping[str, Features],
    groups: Mapping[str, list[str]],
) -> dict:
    """``{scorer: {ood_set or group: {fpr95, fpr95_ood_positive, auroc, ...}}}``; groups are means over their sets."""
    out = {}
    for name, s in scorers.items():
        sid = s.score(id_test).double()
        per = {k: ood_metrics(sid, s.score(f).double()) for k, f in ood.items()}
        for g, members in groups.items():
            members = [m for m in members if m in per]
            if members:
                per[g] = {k: sum(per[m][k] for m in members) / len(members) for k in KEYS}
        out[name] = per
    return out


def record_row(cfg: DictConfig, scorer: str) -> str:
    """The record row of a scorer: ``heat_eval.record_row`` (default ``{row}_{scorer}``) filled in."""
    return str(cfg.heat_eval.get("record_row") or "{row}_{scorer}").format(row=cfg.row, scorer=scorer)


def write_records(cfg: DictConfig, results: dict, wall_time_s: float, wandb_run_id: str | None = None) -> list[str]:
    """One result record per scorer: table ``cfg.table``, row :func:`record_row`, metrics ``<set>/<key>``; the
    record's protocol names the rows' trainer precision (the config that trained the EBMs)."""
    backbone = cfg.get("backbone")
    precision = OmegaConf.select(cfg, "trainer.precision")
    rows = []
    for scorer, per in results.items():
        metrics = {f"{group}/{k}": float(v) for group, m in per.items() for k, v in m.items() if k in KEYS}
        rec = write_record(
            method="heat",
            table=str(cfg.table),
            row=record_row(cfg, scorer),
            seed=cfg.get("seed"),
            metrics=metrics,
            dataset=str(cfg.heat_eval.name),
            backbone=None if backbone is None else str(backbone),
            command=command_line(),
            wall_time_s=wall_time_s,
            run_dir=None,
            wandb_run_id=wandb_run_id,
            protocol=None if precision is None else {"precision": str(precision)},
        )
        rows.append(rec.row)
    return rows


def load_heat_row(experiment: str, ckpt: str) -> HEATModule:
    """A trained HEAT row. Checkpoints written by the launcher hold their prior and MLP configs and rebuild alone;
    older ones (or modules built from objects) get them from the row's experiment config."""
    hp = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    if isinstance(hp.get("prior"), dict) and isinstance(hp.get("mlp"), dict):
        return HEATModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    from hydra import compose

    row = compose("train.yaml", overrides=[f"experiment={experiment}"])
    prior, mlp = hydra.utils.instantiate(row.model.prior), hydra.utils.instantiate(row.model.mlp)
    return HEATModule.load_from_checkpoint(ckpt, prior=prior, mlp=mlp, map_location="cpu").eval()


def eval_sets(cfg: DictConfig) -> tuple[Features, Features, dict[str, Features]]:
    """``(ID train, ID test, {OOD set: features})`` of the run's feature datamodule (``cfg.data``)."""
    dm = hydra.utils.instantiate(cfg.data)
    names = [s.name for s in dm.test_splits if s.kind == "ood"]
    return dm.train_features, dm.val_id, dict(zip(names, dm.val_ood))


def build_scorers(cfg: DictConfig, train: Features) -> tuple[dict[str, object], list[str]]:
    """Every scorer of ``heat_eval``, fitted on ``train``: baselines, priors, the trained HEAT rows (from
    ``heat_checkpoints``) and the compositions (``heat_eval.compositions``: ``{name: [member scorers]}``, default
    ``{"HEAT": <every HEAT row>}``; beta = ``heat_eval.beta``). Returns the scorers and what is missing (a HEAT row
    without a checkpoint, and the compositions that need it)."""
    ev = cfg.heat_eval
    scorers = {n: hydra.utils.instantiate(c).fit(train) for n, c in ev.baselines.items()}
    scorers.update({n: hydra.utils.instantiate(c).fit(train) for n, c in ev.priors.items()})
    missing = []
    for name, row in ev.heat_rows.items():
        ckpt = ev.heat_checkpoints.get(name)
        if ckpt and Path(ckpt).is_file():
            scorers[name] = load_heat_row(row, ckpt)
        else:
            missing.append(f"{name} ({ckpt or 'no checkpoint given'})")
    compositions = ev.get("compositions") or {"HEAT": list(ev.heat_rows)}
    for name, members in compositions.items():
        if all(m in scorers for m in members):
            scorers[name] = Combine(
                [scorers[m] for m in members],
                beta=ev.beta,
                stats_batch_size=ev.stats_batch_size,
                seed=int(cfg.get("seed") or 0),
            ).fit(train)
    return scorers, missing


def save_scores(folder: Path, scorers: dict, names: Iterable[str], id_test: Features, ood: dict[str, Features]) -> None:
    """``scores_<name>.npz`` (arrays ``id`` and ``ood/<set>``, higher = more OOD) per scorer in ``names``."""
    for name in names:
        arrays = {"id": scorers[name].score(id_test).double().numpy()}
        arrays.update({f"ood/{k}": scorers[name].score(f).double().numpy() for k, f in ood.items()})
        np.savez_compressed(folder / f"scores_{name}.npz", **arrays)


def run(cfg: DictConfig) -> dict:
    """Score every scorer on every OOD set, write the JSON, the records and (``cfg.logger``) the logged metrics."""
    start = time.monotonic()
    ev = cfg.heat_eval
    loggers = start_loggers(cfg)  # before the work: the wandb run id goes into the records
    try:
        train, id_test, ood = eval_sets(cfg)
        scorers, missing = build_scorers(cfg, train)
        groups = {"near": list(ev.near), "far": list(ev.far), AVERAGE: list(ood)}
        res = evaluate_scorers(scorers, id_test, ood, groups)
        out_dir = Path(ev.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sizes = {"train": len(train), "id_test": len(id_test), **{k: len(f) for k, f in ood.items()}}
        (out_dir / f"{ev.name}.json").write_text(
            json.dumps(
                {"command": command_line(), "missing_heat_rows": missing, "sizes": sizes, "results": res}, indent=2
            )
        )
        save_scores(out_dir, scorers, ev.get("save_scores") or [], id_test, ood)
        flat = {f"test/{s}/{g}/{k}": float(v) for s, per in res.items() for g, m in per.items() for k, v in m.items()}
        for lg in loggers:
            lg.log_metrics(flat, step=0)
            lg.finalize("success")
        wandb_id = next((str(lg.version) for lg in loggers if isinstance(lg, WandbLogger)), None)
        if cfg.get("table") and cfg.get("row"):
            write_records(cfg, res, round(time.monotonic() - start, 3), wandb_id)
    finally:
        finish_loggers()
    log.info(
        "HEAT evaluation of %s: %d scorers; missing HEAT rows: %s", ev.name, len(res), ", ".join(missing) or "none"
    )
    return res


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    torch.set_grad_enabled(False)
    run(cfg)


if __name__ == "__main__":
    main()
