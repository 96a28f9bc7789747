"""Aggregate GalLoP runs over seeds (mean ± std) into the paper's tables, beside the published numbers.

``python -m gallop.tables --runs logs/gallop --out results/gallop/table.md`` (``make table-gallop`` runs it).

Runs are read from ``{runs}/{row}/shots{K}/seed{S}/metrics.json`` (what ``make table-gallop`` writes). For each
(row, K) the seeds are averaged; the std is the population std (``ddof=0``, as CoOp's ``parse_test_res.py``).
Tables: few-shot top-1 per dataset (+ average over the datasets present), ImageNet DG top-1, ImageNet OOD
(GL-MCM and MCM; FPR95 with MCM's ``fpr_and_fdr_at_recall`` routine = ``fpr95_closest``, AUROC), each followed by the
published row from ``results/gallop/published.yaml``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import yaml

from common.utils.runs import completed_metrics

ROOT = Path(__file__).resolve().parents[1]
DATASETS = [
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
]
DG = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
OOD = ["inaturalist", "sun", "places", "textures"]
_RUN = re.compile(r"^(?P<row>[^/]+)/shots(?P<shots>\d+)/seed(?P<seed>\d+)/metrics\.json$")


def collect(runs: str | Path) -> dict[tuple[str, int], dict[int, dict[str, float]]]:
    """``{(row, shots): {seed: metrics}}`` from every ``{row}/shots{K}/seed{S}/metrics.json`` under ``runs``."""
    runs = Path(runs)
    out: dict[tuple[str, int], dict[int, dict[str, float]]] = {}
    for f in sorted(runs.rglob("metrics.json")):
        m = _RUN.match(f.relative_to(runs).as_posix())
        metrics = completed_metrics(f.parent) if m else None  # unfinished runs are skipped with a warning
        if metrics is not None:
            out.setdefault((m["row"], int(m["shots"])), {})[int(m["seed"])] = metrics
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0) of the per-seed values."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())


def _cell(per_seed: dict[int, dict[str, float]] | None, key: str, scale: float = 1.0) -> str:
    if not per_seed:
        return "-"
    vals = [m[key] * scale for m in per_seed.values() if key in m]
    if not vals:
        return "-"
    mu, sd = mean_std(vals)
    return f"{mu:.1f} ± {sd:.1f} (n={len(vals)})"


def few_shot_table(runs: dict, shots: int, published: dict) -> list[str]:
    head = "| method | " + " | ".join(DATASETS) + " | avg |"
    lines = [head, "|" + "---|" * (len(DATASETS) + 2)]
    cells, means = [], []
    for d in DATASETS:
        per = runs.get((f"{d}_16shot", shots))
        cells.append(_cell(per, "test/acc"))
        if per:
            means.append(np.mean([m["test/acc"] for m in per.values() if "test/acc" in m]))
    avg = f"{np.mean(means):.1f} ({len(means)} datasets)" if means else "-"
    lines.append(f"| GalLoP (ours, {shots} shots) | " + " | ".join(cells) + f" | {avg} |")
    if shots == 16:
        for name in ("GalLoP", "CoOp", "CLIP"):
            vals = published["few_shot_top1"][name]
            lines.append(f"| {name} (published) | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    return lines


def dg_table(runs: dict, published: dict) -> list[str]:
    lines = ["| method | imagenet | " + " | ".join(DG) + " | avg (4 targets) |", "|" + "---|" * (len(DG) + 3)]
    for row, label in (
        ("imagenet_16shot", "GalLoP (ours)"),
        ("imagenet_coop", "CoOp (ours)"),
        ("imagenet_zeroshot", "CLIP (ours)"),
    ):
        per = runs.get((row, 16)) or runs.get((row, 0))
        cells = (
            [_cell(per, "test/acc")] + [_cell(per, f"test/dg/{d}/acc") for d in DG] + [_cell(per, "test/dg/avg_acc")]
        )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name in ("GalLoP", "CoOp", "CLIP"):
        lines.append(
            f"| {name} (published) | "
            + " | ".join(f"{v:.1f}" for v in published["domain_generalization_top1"][name])
            + " |"
        )
    return lines


def ood_table(runs: dict, published: dict) -> list[str]:
    lines = [
        "| method | ID acc | " + " | ".join(f"{o} FPR95 / AUROC" for o in OOD) + " | avg |",
        "|" + "---|" * (len(OOD) + 3),
    ]
    for row, label in (("imagenet_16shot", "GalLoP"), ("imagenet_coop", "CoOp"), ("imagenet_zeroshot", "CLIP")):
        per = runs.get((row, 16)) or runs.get((row, 0))
        for score in ("gl_mcm", "mcm"):
            cells = [_cell(per, "test/acc")]
            for o in [*OOD, "avg"]:
                cells.append(
                    f"{_cell(per, f'test/ood/{o}/{score}/fpr95_closest', 100)} / "
                    f"{_cell(per, f'test/ood/{o}/{score}/auroc', 100)}"
                )
            lines.append(f"| {label} {score.upper().replace('_', '-')} (ours) | " + " | ".join(cells) + " |")
    pub = published["imagenet_ood_fpr95_auroc"]
    for name in ("GalLoP", "CoOp_GL-MCM", "CoOp_MCM", "CLIP_GL-MCM", "CLIP_MCM"):
        acc, *pairs = pub[name]
        lines.append(f"| {name} (published) | {acc:.1f} | " + " | ".join(f"{a:.1f} / {b:.1f}" for a, b in pairs) + " |")
    return lines


def render(runs_dir: str | Path, published_path: str | Path, command: str) -> str:
    runs = collect(runs_dir)
    published = yaml.safe_load(Path(published_path).read_text())
    shots = sorted({k for _, k in runs} | {16})
    out = [
        "# GalLoP: our runs (mean ± std over seeds) beside the published numbers",
        "",
        f"Made by `{command}` from `{runs_dir}`. Published rows: {published['source']}.",
        "The published CLIP few-shot average (75.7) is a typo for 64.77 (results/gallop/published.yaml).",
        "",
    ]
    for k in shots:
        if k == 0:
            continue
        out += [f"## Few-shot top-1 (%), {k} shots", "", *few_shot_table(runs, k, published), ""]
    out += ["## ImageNet domain generalisation top-1 (%)", "", *dg_table(runs, published), ""]
    out += ["## ImageNet OOD (%, FPR95 = MCM routine `fpr95_closest`)", "", *ood_table(runs, published), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "logs" / "gallop"))
    p.add_argument("--published", default=str(ROOT / "results" / "gallop" / "published.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "gallop" / "table.md"))
    a = p.parse_args(argv)
    text = render(a.runs, a.published, "python -m gallop.tables" + ("" if argv is None else " " + " ".join(argv)))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
