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

``--part multilabel`` (``make demo-multilabel``) runs the multi-label part instead: images of two different
garments side by side, labelled with both classes (:mod:`common.data.datasets.fashion_mnist_pairs`); HAPPIER with
multi-label relevance (Sup-H-AP, relevance grows with the number of shared labels) vs ROADMAP with binary relevance
(the same pair of labels or not), same batches and budget, both tested with multi-label relevance::

    python -m common.launch -m experiment=happier/demo_ml seed=0,1,2
    python -m common.launch -m experiment=happier/demo_ml_roadmap seed=0,1,2

and writes ``<out>/multilabel.json``, ``<out>/multilabel.md`` (H-AP, ASI, NDCG, R@1, and the fraction of each
query's top-8 that shares both / one / no label with it, from the runs' test embeddings) and
``<out>/multilabel_grid.png`` (frames: the number of labels each result shares with the query). The claim to
compare with, from the seminar that presented the extension: HAPPIER retrieves images with both labels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from common.demo import run_dirs, run_rows
from common.report.artifacts import export_loss_curve, export_retrieval_run
from common.results.record import ResultRecord
from common.results.seeds import MIN_SEEDS, Stat, paired, stat, verdict

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


def combined_grid(
    grids: dict[str, dict],
    run_dir: Path,
    path: Path,
    title: str = "Fashion-MNIST test queries: top-8 by model, framed by relevance",
) -> None:
    """One figure: for each query, a row per model (``grids``: label -> the run's ``retrieval_grid.json``), framed
    by the level names the runs saved (the hierarchy's by default)."""
    import hydra
    from omegaconf import OmegaConf

    from common.viz.retrieval_grid import _default_level_names, draw_retrieval_grid, raw_image

    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    dataset = hydra.utils.instantiate(cfg.data.test_dataset)
    names = list(grids)
    first = grids[names[0]]
    queries, n_lv = first["query_idx"], first["num_levels"]
    level_names = first.get("level_names") or _default_level_names(n_lv)
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
        level_names=level_names,
        title=title,
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
    """``--part hierarchy`` (default) or ``--part multilabel``; the other arguments go to that part."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--part", choices=PARTS, default="hierarchy")
    args, rest = parser.parse_known_args(argv)
    if argv is None and not rest:
        rest = None  # the part's own defaults, and the make target as its command
    return multilabel_main(rest) if args.part == "multilabel" else hierarchy_main(rest)


def write_outputs(out: Path, part: str, payload: dict, md: str) -> dict:
    """Write ``<out>/<part>.json`` and ``<out>/<part>.md``, print the table; return the payload."""
    (out / f"{part}.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    (out / f"{part}.md").write_text(md)
    print(md)
    return payload


def hierarchy_main(argv: list[str] | None = None) -> dict:
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
    return write_outputs(out, "happier", payload, md)


# ----- the multi-label part -----

PARTS = ("hierarchy", "multilabel")
ML_RUNS = {
    "ml_happier": ("happier/demo_ml", "HAPPIER (multi-label relevance)"),
    "ml_roadmap": ("happier/demo_ml_roadmap", "ROADMAP (binary: same pair)"),
}
ML_ROWS = (
    ("H-AP", "hap"),
    ("ASI", "asi"),
    ("NDCG", "ndcg"),
    ("R@1 (shares ≥ 1 label)", "recall@1"),
    ("mAP@R (shares ≥ 1 label)", "map@r"),
)
TOP_K = 8  # the headline's k, the grid's width
SHARED_NAMES = ("both labels", "one label", "no label")  # t = 2, 1, 0
ML_CLAIM = (
    "The seminar that presented HAPPIER's multi-label extension (on an industrial catalogue): trained with "
    "multi-label relevance, HAPPIER retrieves images with both labels."
)


def shared_label_fractions(embeddings: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """``[T+1]`` fraction of the top-k results (cosine, every item a query, left out of its own gallery) that share
    t = 0..T labels with their query, averaged over queries; T = the most labels an item carries."""
    from common.viz.retrieval_grid import retrieval_topk

    labels_t = torch.as_tensor(labels, dtype=torch.bool)
    _, levels = retrieval_topk(torch.as_tensor(embeddings), labels_t, range(len(labels_t)), k)  # [N, k]
    counts = torch.bincount(levels.flatten(), minlength=int(labels_t.sum(1).max()) + 1)
    return (counts.double() / levels.numel()).numpy()


def topk_fractions(sweep_dir: Path, seeds: list[int]) -> dict[str, dict[int, list[float]]]:
    """``{row: {seed: [fraction sharing 0, 1, 2 labels]}}`` from every run's ``test_embeddings.npz``."""
    jobs = run_dirs(sweep_dir)
    out: dict[str, dict[int, list[float]]] = {}
    for row in ML_RUNS:
        out[row] = {}
        for seed in seeds:
            data = np.load(jobs[(row, seed)] / "test_embeddings.npz")
            out[row][seed] = shared_label_fractions(data["embeddings"], data["labels"]).tolist()
    return out


def _shared(fractions: dict[int, list[float]], t: int) -> Stat:
    return Stat.of(f[t] for f in fractions.values())


def ml_table(records: list[ResultRecord], fractions: dict, command: str, seeds: list[int]) -> str:
    labels = [label for _, label in ML_RUNS.values()]
    lines = [
        "## Multi-label retrieval: HAPPIER vs ROADMAP on two-garment Fashion-MNIST",
        "",
        f"Produced by `{command}` (CPU); mean ± std over seeds {seeds} (population std), in %.",
        "Images: two different Fashion-MNIST garments side by side (28 x 56), labelled with both classes (45 pairs); "
        "1800 training images (composed from the run's seed), 900 test images (fixed), each test image a query "
        "against the 899 others. Relevance = the number of labels shared with the query (0, 1, 2): HAPPIER trains "
        "on it, ROADMAP on binary relevance (same pair or not); both are tested with it.",
        "",
        "| metric | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for t, name in zip((2, 1, 0), SHARED_NAMES, strict=True):
        cells = [_shared(fractions[row], t).text(100, 2) for row in ML_RUNS]
        lines.append(f"| top-{TOP_K} sharing {name} | " + " | ".join(cells) + " |")
    for label, key in ML_ROWS:
        lines.append(
            f"| {label} | " + " | ".join(stat(records, "happier", r, key).text(100, 2) for r in ML_RUNS) + " |"
        )
    return "\n".join(lines) + "\n"


def ml_claim(records: list[ResultRecord], fractions: dict) -> dict:
    """HAPPIER - ROADMAP paired by seed: the claim holds when more of the top-k share both labels (beyond the
    seeds' std)."""
    happier, roadmap = fractions["ml_happier"], fractions["ml_roadmap"]
    d = {"both_labels@k": Stat.of(happier[s][2] - roadmap[s][2] for s in sorted(set(happier) & set(roadmap)))}
    d |= {k: paired(records, "happier", "ml_happier", "ml_roadmap", k) for k in ("hap", "ndcg", "recall@1")}
    words = {k: verdict(v) for k, v in d.items()}
    n = d["both_labels@k"].n
    caveat = "" if n >= MIN_SEEDS else f" This rests on {n} seed(s) only."
    detail = ", ".join(f"{k} {v.text(100, 2, signed=True)} ({words[k]})" for k, v in d.items())
    return {
        "text": ML_CLAIM,
        "holds": words["both_labels@k"] == "ahead",
        "n_seeds": n,
        "detail": f"HAPPIER - ROADMAP in points, paired by seed (k = {TOP_K}): {detail}.{caveat}",
        "deltas": {k: {"mean": v.mean, "std": v.std, "n": v.n, "verdict": words[k]} for k, v in d.items()},
    }


def ml_headline(fractions: dict, c: dict) -> dict:
    def both(row: str) -> str:
        s = _shared(fractions[row], 2)
        return f"{ML_RUNS[row][1]} {100 * s.mean:.1f} ± {100 * s.std:.1f}"

    state = "claim holds" if c["holds"] else "claim does NOT hold"
    return {
        "task": "Multi-label",
        "metric": f"% of top-{TOP_K} sharing both labels",
        "ours": both("ml_happier"),
        "baselines": both("ml_roadmap"),
        "verdict": f"{state} over {c['n_seeds']} seeds: more results with both labels than a binary loss",
    }


def multilabel_main(argv: list[str] | None = None) -> dict:
    run = run_rows("happier", {row: exp for row, (exp, _) in ML_RUNS.items()}, argv, __doc__)
    out, seeds, first = run.out, run.seeds, run.first_run_dirs
    records = [r for r in run.records if r.row in ML_RUNS]
    fractions = topk_fractions(out / "runs" / "happier", seeds)
    curves = {row: export_loss_curve(d, out / "artifacts", "multilabel", row) for row, d in first.items()}
    grids = {ML_RUNS[row][1]: json.loads((d / "retrieval_grid.json").read_text()) for row, d in first.items()}
    grid_path = out / "multilabel_grid.png"
    title = f"Two-garment test queries: top-{TOP_K} by model, framed by the number of labels shared with the query"
    combined_grid(grids, first["ml_happier"], grid_path, title=title)
    command = "make demo-multilabel" if not argv else "python -m happier.demo --part multilabel " + " ".join(argv)
    c = ml_claim(records, fractions)
    md = ml_table(records, fractions, command, seeds) + "\n" + c["detail"] + "\n"
    rows = {row: {key: vars(stat(records, "happier", row, key)) for _, key in ML_ROWS} for row in ML_RUNS}
    for row in ML_RUNS:
        for t, name in zip((2, 1, 0), SHARED_NAMES, strict=True):
            rows[row][f"top{TOP_K}_{name.replace(' ', '_')}"] = vars(_shared(fractions[row], t))
    payload = {
        "command": run.command,
        "seeds": seeds,
        "rows": rows,
        "topk_shared_fractions": {"k": TOP_K, "per_seed": fractions},
        "artifacts": {row: {"curve": name} for row, name in curves.items()},
        "claim": c,
        "headline": ml_headline(fractions, c),
        "grid_png": grid_path.name,
    }
    return write_outputs(out, "multilabel", payload, md)


if __name__ == "__main__":
    main()
