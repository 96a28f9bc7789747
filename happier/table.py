"""Collect the HAPPIER table runs into ``results/happier/table.md``, next to the published numbers.

    python -m happier.table [--runs logs/happier] [--out results/happier/table.md]

Each row ``<dataset>_<model>`` is read from ``<runs>/<row>/metrics.json`` (written by ``common.launch``). DyML-Vehicle
and DyML-Animal are tested on three single-level benchmarks: ``<row>`` (fine), ``<row>_middle`` and ``<row>_coarse``
(test-only runs from the row's last checkpoint); their metrics are averaged across the three sets (inter-set, the
paper's "Average-mAP"). DyML-Product has one set with three levels: its Average-mAP is the mean of ``test/map``,
``test/level1/map`` and ``test/level2/map`` (intra-set). Rows without a run are shown as "not run"; published numbers
come from ``results/happier/published.yaml`` and are kept in their own column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from common.data.datasets.dyml import DYML_BENCHMARKS, dyml_overall
from common.utils.runs import completed_metrics

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "sop": "SOP",
    "inat_base": "iNat-base",
    "inat_full": "iNat-full",
    "dyml_vehicle": "DyML-Vehicle",
    "dyml_animal": "DyML-Animal",
    "dyml_product": "DyML-Product",
}
MODELS = {"happier": "HAPPIER", "csl": "CSL", "roadmap": "ROADMAP (binary)", "nsm": "NSM (binary)"}
GRADED_COLUMNS = (
    ("H-AP", "test/hap"),
    ("ASI", "test/asi"),
    ("NDCG", "test/ndcg"),
    ("AP", "test/map"),
    ("mAP@R", "test/map@r"),
    ("R@1", "test/recall@1"),
)
DYML_COLUMNS = (
    ("Average-mAP", "average_map"),
    ("ASI", "test/asi"),
    ("R@1", "test/recall@1"),
    ("R@10", "test/recall@10"),
    ("R@20", "test/recall@20"),
)


def _read(path: Path) -> dict | None:
    """The metrics of the run folder holding ``path`` (``metrics.json``) if that run completed; an unfinished run is
    skipped with a warning (:func:`common.utils.runs.completed_metrics`)."""
    return completed_metrics(path.parent)


def row_metrics(runs: Path, dataset: str, model: str) -> dict | None:
    """Metrics of one table row (DyML rows averaged as the paper does); None when the row was not run."""
    row = f"{dataset}_{model}"
    if dataset in ("dyml_vehicle", "dyml_animal"):
        per_set = {}
        for bench in DYML_BENCHMARKS:
            m = _read(runs / (row if bench == "fine" else f"{row}_{bench}") / "metrics.json")
            if m is not None:
                per_set[bench] = {k: v for k, v in m.items() if k.startswith("test/")}
        if not per_set:
            return None
        out = dyml_overall(per_set)
        out["average_map"] = out.get("test/map", float("nan"))
        out["sets_found"] = len(per_set)
        return out
    m = _read(runs / row / "metrics.json")
    if m is None:
        return None
    if dataset == "dyml_product":
        levels = {k: m[k] for k in ("test/map", "test/level1/map", "test/level2/map") if k in m}
        m["average_map"] = sum(levels.values()) / len(levels) if levels else float("nan")
    return m


def published_lookup(path: Path) -> dict[tuple[str, str, str], float]:
    pub = yaml.safe_load(path.read_text())
    return {(e["dataset"], e["model"], e["metric"]): e["value"] for e in pub["numbers"] if e["value"] is not None}


def build_table(runs: Path, published: Path) -> str:
    pub = published_lookup(published)
    lines = ["# HAPPIER tables: our runs (left) and published numbers (right, with sources in published.yaml)", ""]
    lines.append(f"Runs read from `{runs}`; re-create with `make table-happier` (one `make table-happier-<dataset>`")
    lines.append("per dataset). Values in percent. 'not run' = no completed run for that row yet (unfinished runs are")
    lines.append("skipped, with a warning).")
    for key, ds in DATASETS.items():
        cols = DYML_COLUMNS if key.startswith("dyml") else GRADED_COLUMNS
        lines += [
            "",
            f"## {ds}",
            "",
            "| model | experiment | " + " | ".join(c for c, _ in cols) + " | published |",
            "|---|---|" + "---|" * (len(cols) + 1),
        ]
        for mkey, model in MODELS.items():
            m = row_metrics(runs, key, mkey)
            cells = ["not run"] * len(cols) if m is None else [f"{100 * m[k]:.2f}" if k in m else "-" for _, k in cols]
            pubs = [
                f"{metric} {v}"
                for (d, mo, metric), v in pub.items()
                if mo == model.split(" ")[0] and (d == ds or (key.startswith("inat") and d.startswith("iNaturalist")))
            ]
            lines.append(
                f"| {model} | `happier/{key}_{mkey}` | " + " | ".join(cells) + f" | {'; '.join(pubs) or '-'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "logs" / "happier"))
    p.add_argument("--published", default=str(ROOT / "results" / "happier" / "published.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "happier" / "table.md"))
    args = p.parse_args(argv)
    text = build_table(Path(args.runs), Path(args.published))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
