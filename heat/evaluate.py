"""The HEAT results table: baselines, priors, HEAT-* and the composition on cached features, near/far OOD.

``python -m heat.evaluate experiment=heat/cifar10_eval`` (``make table-heat``). For one ID dataset it loads the cached
train / test / OOD features of ``data`` (extract them with ``python -m heat.extract``), fits every scorer of
``heat_eval.baselines`` and the priors, restores the trained HEAT rows from ``heat_eval.heat_checkpoints`` (missing ones
are skipped and named), composes them (beta = ``heat_eval.beta``), and scores each OOD set with
``common.metrics.ood.ood_metrics``. Output: per-set and near/far means of FPR95 (ID positive, HEAT's convention), FPR95
with OOD positive (OpenOOD v1.5) and AUROC, as JSON and a markdown table in ``heat_eval.out_dir``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import common.config.resolvers  # noqa: F401
from common.metrics.ood import ood_metrics
from heat.datamodule import load_features
from heat.features import Features
from heat.module import HEATModule
from heat.scorers.combine import Combine
from heat.scorers.gaussian import GMM, GMMStd
from heat.scorers.logits import EnergyLogits

log = logging.getLogger(__name__)
KEYS = ("fpr95", "fpr95_ood_positive", "auroc")


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


def markdown(results: dict, columns: list[str]) -> str:
    head = "| scorer | " + " | ".join(f"{c} FPR95 / FPR95-OOD+ / AUROC" for c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for name, per in results.items():
        cells = [" / ".join(f"{100 * per[c][k]:.1f}" for k in KEYS) if c in per else "n/a" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    ev, data = cfg.heat_eval, cfg.data
    train = load_features(OmegaConf.to_container(data.train, resolve=True), data.cache_dir)
    id_test = load_features(OmegaConf.to_container(data.val_id, resolve=True), data.cache_dir)
    ood = {
        n: load_features(OmegaConf.to_container(s, resolve=True), data.cache_dir)
        for n, s in zip(data.ood_names, data.val_ood)
    }
    scorers = {n: hydra.utils.instantiate(c).fit(train) for n, c in ev.baselines.items()}
    scorers.update({"EL": EnergyLogits().fit(train), "GMM": GMM().fit(train), "GMM-std": GMMStd().fit(train)})
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
    groups = {"near": list(ev.near), "far": list(ev.far)}
    res = evaluate_scorers(scorers, id_test, ood, groups)
    columns = [*data.ood_names, "near", "far"]
    out_dir = Path(ev.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = f"python -m heat.evaluate experiment={cfg.experiment_name}"
    (out_dir / f"{ev.name}.json").write_text(
        json.dumps({"command": cmd, "missing_heat_rows": missing, "results": res}, indent=2)
    )
    md = (
        f"# HEAT table, {ev.name}\n\nCommand: `{cmd}`. Values x100: FPR95 (ID positive, HEAT) / FPR95 (OOD positive, "
        f"OpenOOD v1.5) / AUROC. Missing HEAT rows: {', '.join(missing) or 'none'}.\n\n{markdown(res, columns)}\n"
    )
    (out_dir / f"{ev.name}.md").write_text(md)
    print(md)
    return res


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    torch.set_grad_enabled(False)
    run(cfg)


if __name__ == "__main__":
    main()
