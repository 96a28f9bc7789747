"""Build ``results/report/index.html`` and ``results/report/REPORT.md`` from what the runs left on disk.

Inputs (all optional; a missing part is said, never invented):

- ``results/demo/<method>.md`` / ``.json``: each demo's table (with its command) and numbers; a JSON may hold
  ``"claim": {"text", "holds", "detail"}``: the paper's claim and whether our small run agrees;
- ``results/demo/**/*.png``: pictures the demos saved (retrieval grids, GalLoP heatmaps...);
- ``results/demo/artifacts/<method>_retrieval_<model>.npz`` (``embeddings``, ``labels``): precision-recall curves;
- ``results/demo/artifacts/<method>_ood_<name>.npz`` (``id``, ``ood/<set>`` arrays of one scorer): histograms, ROC;
- ``results/demo/artifacts/<method>_curve_<model>.csv`` (``step,loss``), or run folders / CSV-logger
  ``metrics.csv`` files named in ``<method>.json`` under ``"curves"``: training curves;
- ``results/<method>/published.yaml``: the papers' numbers with their sources, shown beside ours;
- ``results/<method>/reproduced/*.json``: full-scale table runs (``make table-<method>``), when any exist.

The HTML references images by relative path, so it opens from disk with no server.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from common.report import plots
from common.report.artifacts import loss_curve_from_metrics_csv
from common.report.markdown import to_html
from common.report.published import published_md

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("roadmap", "happier", "heat", "gallop")
TITLES = {
    "roadmap": "Retrieval: ROADMAP vs SmoothAP vs triplet",
    "happier": "Hierarchical retrieval: HAPPIER vs ROADMAP",
    "heat": "OOD detection: HEAT and its parts vs baselines",
    "gallop": "Prompt learning: GalLoP vs CoOp vs zero-shot CLIP",
}


def _loss_series(path: Path) -> tuple[list[int], list[float]] | None:
    """``(steps, losses)`` of one CSV, or None when it holds no training loss."""
    try:
        points = loss_curve_from_metrics_csv(path)
    except ValueError:
        return None
    return ([s for s, _ in points], [v for _, v in points]) if points else None


def build(demo_dir: Path, out_dir: Path, results_dir: Path = ROOT / "results") -> dict[str, Any]:
    """Write the report; return a summary of what went in (sections, images, missing parts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    img_dir = out_dir / "img"
    if img_dir.exists():
        shutil.rmtree(img_dir)
    img_dir.mkdir()
    md: list[str] = ["# robust-retrieval: demo report", ""]
    md += ["Built by `make report` from the files that `make demo` (and `make table-*`) left on disk.", ""]
    summary: dict[str, Any] = {"sections": [], "images": [], "missing": []}
    artifacts = demo_dir / "artifacts"

    def add_image(src: Path, caption: str) -> None:
        dst = img_dir / src.name if src.parent != img_dir else src
        if src != dst:
            shutil.copy(src, dst)
        rel = dst.relative_to(out_dir).as_posix()
        md.extend([f"![{caption}]({rel})", "", f"*{caption}*", ""])
        summary["images"].append(rel)

    for method in METHODS:
        md += [f"## {TITLES[method]}", ""]
        table, numbers = demo_dir / f"{method}.md", demo_dir / f"{method}.json"
        md_text = table.read_text() if table.exists() else ""
        if md_text:
            md += [md_text.strip(), ""]
            summary["sections"].append(method)
        else:
            md += [f"No demo result yet: run `make demo-{method}`.", ""]
            summary["missing"].append(f"demo:{method}")
        info: dict[str, Any] = json.loads(numbers.read_text()) if numbers.exists() else {}
        claim = info.get("claim")
        if isinstance(claim, dict):
            verdict = "agrees with" if claim.get("holds") else "does NOT agree with"
            md += [
                f"**Paper's claim:** {claim.get('text', '')} Our small run {verdict} it. {claim.get('detail', '')}",
                "",
            ]
        elif isinstance(info.get("verdict"), str) and info["verdict"] not in md_text:
            md += [f"**Verdict:** {info['verdict']}", ""]

        # precision-recall curves from saved embeddings
        curves = {}
        for npz in sorted(artifacts.glob(f"{method}_retrieval_*.npz")):
            data = np.load(npz)
            curves[npz.stem.split("_retrieval_", 1)[1]] = plots.interpolated_pr_curve(
                data["embeddings"], data["labels"]
            )
        if curves:
            add_image(
                plots.pr_curves_png(curves, img_dir / f"{method}_pr.png", f"{method}: precision-recall"),
                f"{method}: mean interpolated precision-recall over test queries",
            )
        # OOD histograms and ROC
        for npz in sorted(artifacts.glob(f"{method}_ood_*.npz")):
            data = np.load(npz)
            name = npz.stem.split("_ood_", 1)[1]
            ood = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("ood/")}
            add_image(
                plots.ood_hist_png(data["id"], ood, img_dir / f"{npz.stem}_hist.png", f"{name}: scores"),
                f"{name}: OOD score histograms",
            )
            add_image(
                plots.roc_png(data["id"], ood, img_dir / f"{npz.stem}_roc.png", f"{name}: ROC"),
                f"{name}: ROC (OOD positive)",
            )
        # training curves from CSV logs
        series = {}
        for name, csv_path in (info.get("curves") or {}).items():
            p = Path(csv_path)
            p = p if p.is_absolute() else ROOT / p
            if p.is_dir():
                found = sorted(p.rglob("metrics.csv"))
                p = found[0] if found else p
            if p.is_file() and (curve := _loss_series(p)):
                series[name] = curve
        for csv_path in sorted(artifacts.glob(f"{method}_curve_*.csv")):
            if curve := _loss_series(csv_path):
                series[csv_path.stem.split("_curve_", 1)[1]] = curve
        if series:
            # different losses live on different scales: plot each relative to its first logged value
            scaled = {k: (xs, [y / ys[0] for y in ys]) for k, (xs, ys) in series.items() if ys[0] > 0}
            relative = len(series) > 1 and len(scaled) == len(series)
            add_image(
                plots.training_curves_png(
                    scaled if relative else series,
                    img_dir / f"{method}_training.png",
                    f"{method}: training loss",
                    "loss / first logged loss" if relative else "loss",
                ),
                f"{method}: training curves"
                + (
                    " (each loss divided by its first logged value, as the losses have different scales)"
                    if relative
                    else ""
                ),
            )
        # pictures the demo saved itself
        for png in sorted(p for p in demo_dir.rglob(f"{method}*.png") if p.parent != img_dir):
            add_image(png, png.stem.replace("_", " "))
        # published numbers beside ours
        published = results_dir / method / "published.yaml"
        md += ["### Published numbers (the papers', not ours)", ""]
        md += [published_md(published, ROOT), ""] if published.exists() else ["No published.yaml yet.", ""]
        reproduced = sorted((results_dir / method / "reproduced").glob("*.json"))
        if reproduced:
            md += ["### Our full-scale reproductions", "", "| run | metric | ours |", "|---|---|---|"]
            for r in reproduced:
                for k, v in sorted(json.loads(r.read_text()).items()):
                    if isinstance(v, (int, float)) and k.startswith("test/"):
                        md.append(f"| {r.stem} | {k} | {v:.4f} |")
            md.append("")
        else:
            md += [
                f"No full-scale table run of {method} has been reproduced in this repo yet (they need the paper's "
                f"datasets and GPUs: `make table-{method}`). Deltas to the published numbers appear here once "
                f"`results/{method}/reproduced/*.json` exist.",
                "",
            ]
    text = "\n".join(md).rstrip() + "\n"
    (out_dir / "REPORT.md").write_text(text)
    page = _HTML.format(body=to_html(text), title="robust-retrieval report")
    (out_dir / "index.html").write_text(page)
    summary["html"] = str(out_dir / "index.html")
    return summary


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #f2f2f2; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin-top: 0.5em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }}
code {{ background: #f3f3f3; padding: 0 3px; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesTotal = imgs.length;
}});
</script>
</body></html>
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default=str(ROOT / "results" / "demo"))
    parser.add_argument("--out", default=str(ROOT / "results" / "report"))
    args = parser.parse_args(argv)
    summary = build(Path(args.demo), Path(args.out))
    print(f"report: {summary['html']} ({len(summary['images'])} images, sections {summary['sections']})")
    if summary["missing"]:
        print("missing: " + ", ".join(summary["missing"]))


if __name__ == "__main__":
    main()
