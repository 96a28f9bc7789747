"""``make demo-happier``: HAPPIER vs ROADMAP on Fashion-MNIST with its 2-level hierarchy, 3 seeds, through the launcher.

One Hydra multirun of the launcher over the seeds per row, same data and budget for both losses::

    python -m common.launch -m experiment=happier/demo_fmnist seed=0,1,2
    python -m common.launch -m experiment=happier/demo_fmnist_roadmap seed=0,1,2

Every run writes its result record (table ``demo``, rows ``happier`` and ``roadmap``) into ``<out>/records`` and logs
to wandb offline. This script reads the records back and writes

    <out>/happier.json      per-row mean ± std over seeds, the paired differences, the verdict, the commands
    <out>/happier.md        the table (H-AP, ASI, NDCG, R@1, mAP@R, AP, coarse-level R@1 / mAP@R / AP)
    <out>/happier_grid.png  the same fixed test queries, one row per model (seed 0), framed by relevance level

The paper's claim to compare with: HAPPIER gives higher H-AP / ASI than a binary loss at a similar R@1.
Extra arguments are Hydra overrides passed to every run (e.g. ``trainer.max_epochs=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

from common.demo import run_rows
from common.report.artifacts import export_retrieval_run
from common.results.record import ResultRecord
from common.results.seeds import MIN_SEEDS, paired, stat, verdict

RUNS = {"happier": ("happier/demo_fmnist", "HAPPIER"), "roadmap": ("happier/demo_fmnist_roadmap", "ROADMAP")}
# (label, metric key of the record)
ROWS = (
    ("H-AP", "hap"),
    ("ASI", "asi"),
    ("NDCG", "ndcg"),
    ("R@1 (class)", "recall@1"),
    ("mAP@R (class)", "map@r"),
    ("AP (class)", "map"),
    ("R@1 (coarse group)", "level1/recall@1"),
    ("mAP@R (coarse group)", "level1/map@r"),
    ("AP (coarse group)", "level1/map"),
)
CLAIM = (
    "HAPPIER's paper (ECCV 2022): HAPPIER gives higher H-AP and ASI than binary losses such as ROADMAP, at a "
    "similar R@1."
)


def combined_grid(grids: dict[str, dict], run_dir: Path, path: Path) -> None:
    """One figure: for each query, a row per model (``grids``: label -> the run's ``retrieval_grid.json``)."""
    import hydra
    from omegaconf import OmegaConf

    from common.viz.retrieval_grid import _default_level_names, draw_retrieval_grid, raw_image

    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    dataset = hydra.utils.instantiate(cfg.data.test_dataset)
    names = list(grids)
    first = grids[names[0]]
    queries, n_lv = first["query_idx"], first["num_levels"]
    q_imgs, rows, levels, titles = [], [], [], []
    for r, q in enumerate(queries):
        for name in names:
            g = grids[name]
            if g["query_idx"] != queries:
                raise RuntimeError(
                    "the two runs used different grid queries; keep callbacks.retrieval_grid.query_idx equal"
                )
            q_imgs.append(raw_image(dataset, q))
            rows.append([raw_image(dataset, j) for j in g["topk"][r]])
            levels.append(g["levels"][r])
            titles.append(f"{name}\nquery {q}")
    draw_retrieval_grid(
        q_imgs,
        rows,
        levels,
        n_lv,
        row_titles=titles,
        level_names=_default_level_names(n_lv),
        title="Fashion-MNIST test queries: top-8 by model, framed by relevance",
        path=path,
    )


def table(records: list[ResultRecord], command: str, seeds: list[int]) -> str:
    labels = [label for _, label in RUNS.values()]
    lines = [
        "## HAPPIER vs ROADMAP on Fashion-MNIST (2-level hierarchy: class, coarse group)",
        "",
        f"Produced by `{command}` (CPU); mean ± std over seeds {seeds} (population std), in %.",
        "Test set: 1000 Fashion-MNIST test images, each a query against the 999 others.",
        "",
        "| metric | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(stat(records, "happier", r, key).text(100, 2) for r in RUNS) + " |")
    return "\n".join(lines) + "\n"


def claim(records: list[ResultRecord]) -> dict:
    """HAPPIER - ROADMAP paired by seed: H-AP and ASI ahead (beyond the seeds' std), R@1 not behind by 2 points."""
    d = {k: paired(records, "happier", "happier", "roadmap", k) for k in ("hap", "asi", "recall@1")}
    words = {k: verdict(v) for k, v in d.items()}
    holds = words["hap"] == "ahead" and words["asi"] == "ahead" and d["recall@1"].mean > -0.02
    caveat = "" if d["hap"].n >= MIN_SEEDS else f" This rests on {d['hap'].n} seed(s) only."
    detail = ", ".join(f"{k} {v.text(100, 2, signed=True)} ({words[k]})" for k, v in d.items())
    return {
        "text": CLAIM,
        "holds": holds,
        "n_seeds": d["hap"].n,
        "detail": f"HAPPIER - ROADMAP in points, paired by seed: {detail}.{caveat}",
        "deltas": {k: {"mean": v.mean, "std": v.std, "n": v.n, "verdict": words[k]} for k, v in d.items()},
    }


def headline(records: list[ResultRecord], c: dict) -> dict:
    def pair(row: str) -> str:
        hap, asi = stat(records, "happier", row, "hap"), stat(records, "happier", row, "asi")
        return f"{RUNS[row][1]} {100 * hap.mean:.1f} ± {100 * hap.std:.1f} / {100 * asi.mean:.1f} ± {100 * asi.std:.1f}"

    state = "claim holds" if c["holds"] else "claim does NOT hold"
    return {
        "task": "Hierarchical",
        "metric": "H-AP / ASI",
        "ours": pair("happier"),
        "baselines": pair("roadmap"),
        "verdict": f"{state} over {c['n_seeds']} seeds: higher H-AP and ASI than a binary loss",
    }


def main(argv: list[str] | None = None) -> dict:
    run = run_rows("happier", {row: exp for row, (exp, _) in RUNS.items()}, argv, __doc__)
    out, seeds, records, shown, first = run.out, run.seeds, run.records, run.command, run.first_run_dirs
    # embeddings and loss curves of the first seed for the report
    artifacts = {row: export_retrieval_run(d, out / "artifacts", "happier", row) for row, d in first.items()}
    grids = {RUNS[row][1]: json.loads((d / "retrieval_grid.json").read_text()) for row, d in first.items()}
    grid_path = out / "happier_grid.png"
    combined_grid(grids, first["happier"], grid_path)
    command = "make demo-happier" if not argv else "python -m happier.demo " + " ".join(argv)
    c = claim(records)
    md = table(records, command, seeds) + "\n" + c["detail"] + "\n"
    payload = {
        "command": shown,
        "seeds": seeds,
        "rows": {row: {key: vars(stat(records, "happier", row, key)) for _, key in ROWS} for row in RUNS},
        "artifacts": artifacts,
        "claim": c,
        "headline": headline(records, c),
        "grid_png": grid_path.name,
    }
    (out / "happier.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    (out / "happier.md").write_text(md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
