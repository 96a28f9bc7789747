"""``make report-roadmap``: published numbers (results/roadmap/published.yaml) beside our reproduced ones.

Reproduced numbers are read from the run folders the launcher writes (``metrics.json`` and ``status.json``) under
``--logs`` (default ``logs/``); for each row the newest completed run counts (unfinished runs are skipped, with a
warning). Rows without a
run show "-". Published values are in percent; ours are converted to percent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from common.utils.runs import completed_metrics, list_runs

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("recall@1", "test/recall@1"), ("map@r", "test/map@r"))


def load_published(path: Path) -> dict[str, dict]:
    """``{row: entry}`` over every table of published.yaml."""
    data = yaml.safe_load(path.read_text())
    return {row: entry for table, rows in data.items() if table != "sources" for row, entry in rows.items()}


def find_runs(logs: Path) -> dict[str, tuple[float, dict[str, float], Path]]:
    """``{row: (mtime, metrics, run dir)}`` for completed runs of ``experiment_name: roadmap/<row>``, newest per row.
    Runs that failed, were interrupted or are still running are skipped with a warning naming them."""
    runs: dict[str, tuple[float, dict[str, float], Path]] = {}
    for run in list_runs(logs):
        if not (run.experiment or "").startswith("roadmap/"):
            continue
        metrics = completed_metrics(run.path)
        if metrics is None:
            continue
        row = run.experiment.split("/", 1)[1]
        mtime = run.metrics_file.stat().st_mtime
        if row not in runs or mtime > runs[row][0]:
            runs[row] = (mtime, metrics, run.path)
    return runs


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:.1f}"
    return str(v)


def report(published: dict[str, dict], runs: dict) -> str:
    head = "| row | " + " | ".join(f"{m} published | {m} ours" for m, _ in METRICS) + " | run |"
    lines = [head, "|" + "---|" * (2 + 2 * len(METRICS))]
    for row in list(published) + sorted(set(runs) - set(published)):
        pub = published.get(row, {})
        ours = runs.get(row)
        cells = []
        for key, metric in METRICS:
            cells.append(fmt(pub.get(key, "missing")))
            cells.append(fmt(100 * ours[1][metric]) if ours and metric in ours[1] else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {ours[2] if ours else '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--logs", default=str(ROOT / "logs"))
    p.add_argument("--published", default=str(ROOT / "results" / "roadmap" / "published.yaml"))
    args = p.parse_args(argv)
    logs = Path(args.logs)
    runs = find_runs(logs) if logs.exists() else {}
    print(report(load_published(Path(args.published)), runs))
    print(f"\n{len(runs)} reproduced row(s) found under {logs}. Published numbers: results/roadmap/published.yaml.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
