"""``make demo-roadmap``: ROADMAP vs Smooth-AP vs triplet on Fashion-MNIST, same small CNN, data and budget, 3 seeds.

One Hydra multirun of the launcher over the seeds per row::

    python -m common.launch -m experiment=roadmap/demo_fmnist seed=0,1,2   (then demo_fmnist_smoothap, demo_fmnist_triplet)

Every run writes its result record (table ``demo``, row = the loss config) into ``<out>/records`` and logs to wandb
offline. This script then reads the records back and writes ``<out>/roadmap.json`` (per-row mean ± std over seeds,
the paired differences, the verdict) and ``<out>/roadmap.md``; the embeddings and loss curves of seed 0 go to
``<out>/artifacts`` for the report.
"""

from __future__ import annotations

import json
import sys

from common.demo import run_rows
from common.report.artifacts import export_retrieval_run
from common.results.record import ResultRecord
from common.results.seeds import MIN_SEEDS, paired, stat, verdict

ROWS = {
    "roadmap": ("roadmap/demo_fmnist", "ROADMAP (SupAP + calibration)"),
    "roadmap_smoothap": ("roadmap/demo_fmnist_smoothap", "Smooth-AP"),
    "roadmap_triplet": ("roadmap/demo_fmnist_triplet", "triplet"),
}
KEYS = (("R@1", "recall@1"), ("R@10", "recall@10"), ("mAP@R", "map@r"))
CLAIM = (
    "ROADMAP's paper (NeurIPS 2021): ROADMAP beats Smooth-AP and the other AP and pairwise losses on mAP@R at equal "
    "backbone and budget."
)


def table(records: list[ResultRecord]) -> str:
    lines = ["| loss | " + " | ".join(k for k, _ in KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    for row, (_, label) in ROWS.items():
        cells = [stat(records, "roadmap", row, key).text() for _, key in KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim(records: list[ResultRecord]) -> dict:
    """ROADMAP minus each baseline on mAP@R, paired by seed; the claim holds when ROADMAP is ahead of both."""
    deltas = {row: paired(records, "roadmap", "roadmap", row, "map@r") for row in ROWS if row != "roadmap"}
    words = {row: verdict(d) for row, d in deltas.items()}
    n = min(d.n for d in deltas.values())
    holds = all(w == "ahead" for w in words.values())
    detail = "; ".join(f"vs {ROWS[r][1]}: {d.text(signed=True)} ({words[r]})" for r, d in deltas.items())
    caveat = "" if n >= MIN_SEEDS else f" This rests on {n} seed(s) only."
    return {
        "text": CLAIM,
        "holds": holds,
        "n_seeds": n,
        "detail": f"ROADMAP - baseline, mAP@R, paired by seed: {detail}.{caveat}",
        "deltas": {r: {"mean": d.mean, "std": d.std, "n": d.n, "verdict": words[r]} for r, d in deltas.items()},
    }


def headline(records: list[ResultRecord], c: dict) -> dict:
    ours = stat(records, "roadmap", "roadmap", "map@r")
    base = [f"{ROWS[r][1]} {stat(records, 'roadmap', r, 'map@r').text()}" for r in ROWS if r != "roadmap"]
    words = ", ".join(f"{ROWS[r][1]}: {d['verdict']}" for r, d in c["deltas"].items())
    state = "claim holds" if c["holds"] else "claim does NOT hold"
    return {
        "task": "Retrieval",
        "metric": "mAP@R",
        "ours": f"ROADMAP {ours.text()}",
        "baselines": ", ".join(base),
        "verdict": f"{state} over {c['n_seeds']} seeds (ROADMAP vs {words}); paper: ROADMAP > Smooth-AP",
    }


def main(argv: list[str] | None = None) -> int:
    run = run_rows("roadmap", {row: exp for row, (exp, _) in ROWS.items()}, argv, __doc__)
    out, seeds, records, shown = run.out, run.seeds, run.records, run.command
    artifacts = {
        row: export_retrieval_run(d, out / "artifacts", "roadmap", row) for row, d in run.first_run_dirs.items()
    }
    c = claim(records)
    payload = {
        "command": shown,
        "seeds": seeds,
        "rows": {row: {key: vars(stat(records, "roadmap", row, key)) for _, key in KEYS} for row in ROWS},
        "claim": c,
        "headline": headline(records, c),
        "artifacts": artifacts,
    }
    (out / "roadmap.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    md = "\n".join(
        [
            "## ROADMAP demo: Fashion-MNIST retrieval (CPU)",
            "",
            "Same small CNN (timm `test_resnet`, 128-d), data (250 train / 100 test images per class), 3 epochs, "
            f"sliding-window m-per-class batches (B=128, m=16); only the loss changes. Mean ± std over seeds {seeds} "
            "(population std); the seed sets the initialisation, the batches and the augmentation (the data subset is fixed).",
            "",
            table(records),
            "",
            c["detail"],
            "",
            f"Command: `make demo-roadmap` (= `{shown}`).",
        ]
    )
    (out / "roadmap.md").write_text(md + "\n")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
