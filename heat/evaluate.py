"""The HEAT evaluation: baselines, priors, HEAT-* and the composition on cached features, near/far OOD.

``python -m heat.evaluate experiment=heat/cifar10_eval`` (``make table-heat``). For one ID dataset it loads the cached
train / test / OOD features of ``data`` (extract them with ``python -m heat.extract``), fits every scorer of
``heat_eval.baselines`` and ``heat_eval.priors``, restores the trained HEAT rows from ``heat_eval.heat_checkpoints`` (missing ones
are skipped and named), composes them (beta = ``heat_eval.beta``), and scores each OOD set with
``common.metrics.ood.ood_metrics``. Output: per-set, near/far and all-set ("average", HEAT's own mean) values of FPR95
(ID positive, HEAT's convention), FPR95 with OOD positive (OpenOOD v1.5) and AUROC: one result record per scorer
(``common.results.record``, row ``<row>_<scorer>``, metric keys ``<ood set>/<fpr95|fpr95_ood_positive|auroc>``) and
the raw numbers as JSON in ``heat_eval.out_dir``. ``make tables`` turns the records into the table.

The prior rows "EL", "GMM" and "GMM-std" are the paper's stand-alone priors as the released code scores them (the
energy of the logits; the minimum squared Mahalanobis distance, SSD+, on L2-normalised avg / std features); the
mixture energies that HEAT-GMM / HEAT-GMM-std correct are the separate rows "GMM-energy" and "GMM-std-energy". All are
configured in ``heat_eval.priors``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import common.config.resolvers  # noqa: F401
from common.callbacks.result_record import command_line
from common.metrics.ood import ood_metrics
from common.results.record import write_record
from heat.datamodule import load_features
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


def write_records(cfg: DictConfig, results: dict, wall_time_s: float) -> list[str]:
    """One result record per scorer: table ``cfg.table``, row ``<cfg.row>_<scorer>``, metrics ``<set>/<key>``."""
    backbone = OmegaConf.select(cfg, "extract.backbone_name") or OmegaConf.select(cfg, "extract.backbone.name")
    rows = []
    for scorer, per in results.items():
        metrics = {f"{group}/{k}": float(v) for group, m in per.items() for k, v in m.items() if k in KEYS}
        rec = write_record(
            method="heat",
            table=str(cfg.table),
            row=f"{cfg.row}_{scorer}",
            seed=cfg.get("seed"),
            metrics=metrics,
            dataset=str(cfg.heat_eval.name),
            backbone=None if backbone is None else str(backbone),
            command=command_line(),
            wall_time_s=wall_time_s,
            run_dir=None,
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


def run(cfg: DictConfig) -> dict:
    start = time.monotonic()
    ev, data = cfg.heat_eval, cfg.data
    train = load_features(OmegaConf.to_container(data.train, resolve=True), data.cache_dir)
    id_test = load_features(OmegaConf.to_container(data.val_id, resolve=True), data.cache_dir)
    ood = {
        n: load_features(OmegaConf.to_container(s, resolve=True), data.cache_dir)
        for n, s in zip(data.ood_names, data.val_ood)
    }
    scorers = {n: hydra.utils.instantiate(c).fit(train) for n, c in ev.baselines.items()}
    scorers.update({n: hydra.utils.instantiate(c).fit(train) for n, c in ev.priors.items()})
    heat, missing = {}, []
    for name, row in ev.heat_rows.items():
        ckpt = ev.heat_checkpoints.get(name)
        if ckpt and Path(ckpt).is_file():
            heat[name] = load_heat_row(row, ckpt)
        else:
            missing.append(f"{name} ({ckpt or 'no checkpoint given'})")
    scorers.update(heat)
    if len(heat) == len(ev.heat_rows):
        scorers["HEAT"] = Combine(list(heat.values()), beta=ev.beta, stats_batch_size=ev.stats_batch_size).fit(train)
    groups = {"near": list(ev.near), "far": list(ev.far), AVERAGE: list(data.ood_names)}
    res = evaluate_scorers(scorers, id_test, ood, groups)
    out_dir = Path(ev.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = command_line()
    (out_dir / f"{ev.name}.json").write_text(
        json.dumps({"command": cmd, "missing_heat_rows": missing, "results": res}, indent=2)
    )
    if cfg.get("table") and cfg.get("row"):
        write_records(cfg, res, round(time.monotonic() - start, 3))
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
