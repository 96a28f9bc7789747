"""``make report``: ``results/report/index.html`` and ``results/report/REPORT.md`` from the records and the demos.

Inputs (all optional; a missing part is said, never invented):

- the result records (``results/records``, or ``$RESULTS_RECORDS_DIR``) and ``results/<method>/published.yaml``:
  every paper table, ours (mean ± std over seeds) beside the published numbers with Δ (``common.results.collect``);
  records of the demos (table ``demo``, written by ``common.results.record.write_record``) as tables of their own;
- a demo run's folder (``--demo``: ``outputs/demo`` after ``make demo``, by default the committed reference run
  ``results/reference``): ``<method>.md`` / ``.json``, each demo's table (with its command); a JSON may hold
  ``"claim": {"text", "holds", "detail"}``: the paper's claim and the verdict from the seeds; ``records/``: the demo
  runs' result records; ``**/*.png``: pictures the demos saved (retrieval grids, GalLoP heatmaps...);
  ``artifacts/<method>_retrieval_<model>.npz`` (``embeddings``, ``labels``): precision-recall curves;
  ``artifacts/<method>_ood_<name>.npz`` (``id``, ``ood/<set>`` arrays of one scorer): histograms, ROC;
  ``artifacts/<method>_curve_<model>.csv`` (``step,loss``), or run folders / CSV-logger ``metrics.csv`` files named
  in ``<method>.json`` under ``"curves"``: training curves;
- the reference run (``--reference``, ``results/reference``): a demo run other than the reference is compared with
  it, metric by metric, and the report lists where it differs beyond run-to-run noise (the seeds' std).

The page starts with a summary (one line per paper table, with links), then the paper tables per method, then the
demos. The HTML references images by relative path, so it opens from disk with no server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.report import plots
from common.report.artifacts import loss_curve_from_metrics_csv
from common.report.markdown import to_html
from common.results.collect import MISSING, NO_RECORD, NOT_OURS, TableResult, collect, to_markdown
from common.results.published import load_published
from common.results.record import ResultRecord, default_records_dir, load_records
from common.results.seeds import compare_runs

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference"
METHODS = ("roadmap", "happier", "multilabel", "heat", "gallop")  # the demo parts (multilabel: HAPPIER's second)
TITLES = {
    "roadmap": "Retrieval: ROADMAP vs SmoothAP vs triplet",
    "happier": "Hierarchical retrieval: HAPPIER vs ROADMAP",
    "multilabel": "Multi-label retrieval: HAPPIER vs ROADMAP on two garments",
    "heat": "OOD detection: HEAT and its parts vs baselines",
    "gallop": "Prompt learning: GalLoP vs CoOp vs zero-shot CLIP",
}


@dataclass
class Page:
    """The Markdown being written and what went in (images copied next to it, sections, missing parts)."""

    out_dir: Path
    md: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def img_dir(self) -> Path:
        return self.out_dir / "img"

    def add(self, *lines: str) -> None:
        self.md.extend(lines)

    def add_image(self, src: Path, caption: str) -> None:
        dst = self.img_dir / src.name if src.parent != self.img_dir else src
        if src != dst:
            shutil.copy(src, dst)
        rel = dst.relative_to(self.out_dir).as_posix()
        self.add(f"![{caption}]({rel})", "", f"*{caption}*", "")
        self.images.append(rel)


def _shift_headings(md: str, by: int) -> str:
    """Move every ATX heading of ``md`` ``by`` levels down (at most level 6), to nest it in the page."""
    lines = []
    for line in md.splitlines():
        hashes = len(line) - len(line.lstrip("#"))
        if 0 < hashes <= 6 and line[hashes : hashes + 1] == " ":
            line = "#" * min(hashes + by, 6) + line[hashes:]
        lines.append(line)
    return "\n".join(lines)


def _anchor(name: str) -> str:
    return f'<a id="{name}"></a>'


def _filled(table: TableResult) -> tuple[int, int, int]:
    """``(our cells filled, our cells expected, published values)`` of one table."""
    cells = [c for r in table.rows for c in r.cells.values()]
    ours = [c for c in cells if c.status != "not_ours"]
    return sum(c.status == "ok" for c in ours), len(ours), sum(c.published is not None for c in cells)


def summary_section(page: Page, tables: list[TableResult]) -> None:
    """One line per table with links: how many of our cells have a record and how many published values exist."""
    page.add("## Summary", "")
    page.add(
        f"Each paper table shows ours (mean ± std over seeds, from the result records) beside the published value "
        f"and Δ = ours − published. {MISSING}: the paper gives no value (or none could be read); {NO_RECORD}: no "
        f"run of ours yet; {NOT_OURS}: a method this repository does not run.",
        "",
        "| method | table | our cells filled | published values |",
        "|---|---|---|---|",
    )
    for t in tables:
        done, expected, published = _filled(t)
        page.add(f"| {t.method} | [{t.title}](#{t.anchor}) | {done} / {expected} | {published} |")
    flagged = [(t, r, c) for t in tables for r in t.rows for c in t.columns if r.cells[c].flag]
    if flagged:  # a published value that disagrees with the values it averages: Δ against it means little
        page.add("", "Published values flagged (!) as suspect:", "")
        page.add(*[f"- [{t.title}](#{t.anchor}), {r.label}, {c}: {r.cells[c].flag}" for t, r, c in flagged])
    page.add("", "Demos: " + ", ".join(f"[{m}](#demo-{m})" for m in METHODS), "")


def tables_section(page: Page, tables: list[TableResult], results_dir: Path) -> None:
    """Every paper table of every method, then the notes of its published.yaml."""
    page.add("## Paper tables: ours beside the published numbers", "")
    for method in METHODS:
        own = [t for t in tables if t.method == method and t.id != "demo"]
        if not own:
            continue
        page.add(f"### {method}", "")
        for t in own:
            page.add(_anchor(t.anchor), "", _shift_headings(to_markdown(t), 1), "")
        path = results_dir / method / "published.yaml"
        if path.is_file():
            pub = load_published(path)
            page.add(f"Published numbers: `{method}/published.yaml` ({pub.paper}).", "")
            page.add(*[f"- {n}" for n in pub.notes], "")


def _claim_lines(info: dict[str, Any], md_text: str) -> list[str]:
    claim = info.get("claim")
    if isinstance(claim, dict):
        verdict = "agrees with" if claim.get("holds") else "does NOT agree with"
        return [f"**Paper's claim:** {claim.get('text', '')} Our small run {verdict} it. {claim.get('detail', '')}", ""]
    if isinstance(info.get("verdict"), str) and info["verdict"] not in md_text:
        return [f"**Verdict:** {info['verdict']}", ""]
    return []


def _pr_curves(page: Page, method: str, artifacts: Path) -> None:
    curves = {}
    for npz in sorted(artifacts.glob(f"{method}_retrieval_*.npz")):
        data = np.load(npz)
        queries = int(data["num_queries"]) if "num_queries" in data.files else None
        curves[npz.stem.split("_retrieval_", 1)[1]] = plots.interpolated_pr_curve(
            data["embeddings"], data["labels"], num_queries=queries
        )
    if curves:
        png = plots.pr_curves_png(curves, page.img_dir / f"{method}_pr.png", f"{method}: precision-recall")
        page.add_image(png, f"{method}: mean interpolated precision-recall over test queries")


def _ood_plots(page: Page, method: str, artifacts: Path) -> None:
    for npz in sorted(artifacts.glob(f"{method}_ood_*.npz")):
        data = np.load(npz)
        name = npz.stem.split("_ood_", 1)[1]
        ood = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("ood/")}
        hist = plots.ood_hist_png(data["id"], ood, page.img_dir / f"{npz.stem}_hist.png", f"{name}: scores")
        page.add_image(hist, f"{name}: OOD score histograms")
        roc = plots.roc_png(data["id"], ood, page.img_dir / f"{npz.stem}_roc.png", f"{name}: ROC")
        page.add_image(roc, f"{name}: ROC (OOD positive)")


def _loss_series(path: Path) -> tuple[list[int], list[float]] | None:
    """``(steps, losses)`` of one CSV, or None when it holds no training loss."""
    try:
        points = loss_curve_from_metrics_csv(path)
    except ValueError:
        return None
    return ([s for s, _ in points], [v for _, v in points]) if points else None


def _curve_files(method: str, info: dict[str, Any], artifacts: Path) -> dict[str, Path]:
    """Training-curve CSVs: those named in the demo's JSON (a file or a run folder), then the exported ones."""
    files = {}
    for name, csv_path in (info.get("curves") or {}).items():
        p = Path(csv_path)
        p = p if p.is_absolute() else ROOT / p
        if p.is_dir():
            found = sorted(p.rglob("metrics.csv"))
            p = found[0] if found else p
        files[name] = p
    for csv_path in sorted(artifacts.glob(f"{method}_curve_*.csv")):
        files[csv_path.stem.split("_curve_", 1)[1]] = csv_path
    return files


def _training_curves(page: Page, method: str, info: dict[str, Any], artifacts: Path) -> None:
    series = {n: s for n, p in _curve_files(method, info, artifacts).items() if p.is_file() and (s := _loss_series(p))}
    if not series:
        return
    # different losses live on different scales: plot each relative to its first logged value
    scaled = {k: (xs, [y / ys[0] for y in ys]) for k, (xs, ys) in series.items() if ys[0] > 0}
    relative = len(series) > 1 and len(scaled) == len(series)
    png = plots.training_curves_png(
        scaled if relative else series,
        page.img_dir / f"{method}_training.png",
        f"{method}: training loss",
        "loss / first logged loss" if relative else "loss",
    )
    note = " (each loss divided by its first logged value, as the losses have different scales)" if relative else ""
    page.add_image(png, f"{method}: training curves{note}")


def demo_section(page: Page, method: str, demo_dir: Path, demo_tables: list[TableResult]) -> None:
    """The demo of one method: its table and claim, its records, and the plots of what it saved."""
    page.add(_anchor(f"demo-{method}"), "", f"### {TITLES[method]}", "")
    table, numbers = demo_dir / f"{method}.md", demo_dir / f"{method}.json"
    md_text = table.read_text() if table.exists() else ""
    if md_text:
        page.add(_shift_headings(md_text.strip(), 2), "")
        page.sections.append(method)
    else:
        page.add(f"No demo result yet: run `make demo-{method}`.", "")
        page.missing.append(f"demo:{method}")
    info: dict[str, Any] = json.loads(numbers.read_text()) if numbers.exists() else {}
    page.add(*_claim_lines(info, md_text))
    for t in demo_tables:
        page.add(_shift_headings(to_markdown(t), 1), "")
    artifacts = demo_dir / "artifacts"
    _pr_curves(page, method, artifacts)
    _ood_plots(page, method, artifacts)
    _training_curves(page, method, info, artifacts)
    for png in sorted(p for p in demo_dir.rglob(f"{method}*.png") if p.parent != page.img_dir):
        page.add_image(png, png.stem.replace("_", " "))


def reference_section(page: Page, ours: list[ResultRecord], reference: list[ResultRecord], ref_dir: Path) -> None:
    """Where this demo run differs from the committed reference run beyond run-to-run noise.

    Noise is defined from the seeds (``common.results.seeds``): a metric differs when
    ``|mean_ours - mean_ref| > 2 x max(std_ours, std_ref)``, both runs having at least 2 seeds.
    """
    page.add(_anchor("demo-vs-reference"), "", "## This demo run vs the reference run", "")
    diffs = compare_runs(ours, reference)
    if not diffs:
        page.add(f"No demo record in common with the reference run ({ref_dir}); nothing to compare.", "")
        return
    beyond = [d for d in diffs if d.beyond_noise]
    unknown = [d for d in diffs if d.beyond_noise is None]
    page.add(
        f"Reference: `{ref_dir.relative_to(ROOT) if ref_dir.is_relative_to(ROOT) else ref_dir}` (its command is in "
        "`COMMAND.md` there). A metric differs beyond run-to-run noise when |ours − reference| > 2 × the larger "
        f"seed std of the two runs. Compared: {len(diffs)} (row, metric) pairs; beyond noise: {len(beyond)}; "
        f"no noise estimate (a run with one seed): {len(unknown)}.",
        "",
    )
    if beyond:
        page.add("| method | row | metric | ours | reference | Δ | 2 × max std |", "|---|---|---|---|---|---|---|")
        for d in beyond:
            page.add(
                f"| {d.method} | {d.row} | {d.key} | {d.ours.text(digits=4)} | {d.reference.text(digits=4)} | "
                f"{d.delta:+.4f} | {d.noise:.4f} |"
            )
        page.add("")
    else:
        page.add("Every compared metric is within run-to-run noise of the reference run.", "")


def write_page(page: Page) -> Path:
    text = "\n".join(page.md).rstrip() + "\n"
    (page.out_dir / "REPORT.md").write_text(text)
    html = page.out_dir / "index.html"
    html.write_text(_HTML.format(body=to_html(text), title="robust-retrieval report"))
    return html


def build(
    demo_dir: Path,
    out_dir: Path,
    results_dir: Path = ROOT / "results",
    records_dir: Path | None = None,
    reference_dir: Path | None = REFERENCE,
) -> dict[str, Any]:
    """Write the report; return a summary of what went in (sections, images, tables, missing parts).

    The demos' records are read from ``<demo_dir>/records`` (and from ``records_dir``); when ``demo_dir`` is not
    ``reference_dir``, the demo run is compared with the reference run's records (``<reference_dir>/records``).
    """
    page = Page(out_dir=Path(out_dir))
    page.out_dir.mkdir(parents=True, exist_ok=True)
    if page.img_dir.exists():
        shutil.rmtree(page.img_dir)
    page.img_dir.mkdir()
    records_dir = Path(records_dir) if records_dir is not None else default_records_dir()
    records = load_records(records_dir) if records_dir.is_dir() else []
    demo_records_dir = Path(demo_dir) / "records"
    demo_records = load_records(demo_records_dir) if demo_records_dir.is_dir() else []
    if demo_records_dir.is_dir() and demo_records_dir.resolve() != records_dir.resolve():
        records = records + demo_records
    tables = collect(records, results_dir)
    paper = [t for t in tables if t.id != "demo"]
    page.add("# robust-retrieval: report", "")
    page.add(f"Built by `make report` from {len(records)} result record(s) and the files `make demo` left on disk.", "")
    summary_section(page, paper)
    ref_records = None if reference_dir is None else Path(reference_dir) / "records"
    compared = ref_records is not None and Path(demo_dir).resolve() != Path(reference_dir).resolve()
    if compared and ref_records.is_dir():
        page.add("This demo run beside the committed reference run: [demo vs reference](#demo-vs-reference).", "")
    tables_section(page, paper, Path(results_dir))
    page.add("## Demos (CPU, Fashion-MNIST)", "")
    for method in METHODS:
        demo_section(page, method, Path(demo_dir), [t for t in tables if t.id == "demo" and t.method == method])
    if compared and ref_records.is_dir():
        reference_section(page, demo_records, load_records(ref_records), Path(reference_dir))
    elif compared:
        page.missing.append("reference run")
    html = write_page(page)
    return {
        "sections": page.sections,
        "images": page.images,
        "missing": page.missing,
        "tables": [t.anchor for t in paper],
        "html": str(html),
    }


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; display: block; overflow-x: auto; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }}
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
  const links = [...document.querySelectorAll('a[href^="#"]')];
  document.body.dataset.linksBroken = links.filter(a => !document.getElementById(a.hash.slice(1))).length;
}});
</script>
</body></html>
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--demo", default=str(REFERENCE), help="a demo run's folder (default: the reference run, results/reference)"
    )
    parser.add_argument("--reference", default=str(REFERENCE), help="the reference run to compare the demo run with")
    parser.add_argument(
        "--out",
        default=os.environ.get("RESULTS_REPORT_DIR") or str(ROOT / "results" / "report"),
        help="output folder (default: $RESULTS_REPORT_DIR or results/report)",
    )
    parser.add_argument(
        "--records", default=None, help="records folder (default: $RESULTS_RECORDS_DIR or results/records)"
    )
    args = parser.parse_args(argv)
    summary = build(
        Path(args.demo),
        Path(args.out),
        records_dir=None if args.records is None else Path(args.records),
        reference_dir=Path(args.reference),
    )
    print(
        f"report: {summary['html']} ({len(summary['images'])} images, {len(summary['tables'])} paper tables, "
        f"demo sections {summary['sections']})"
    )
    if summary["missing"]:
        print("missing: " + ", ".join(summary["missing"]))


if __name__ == "__main__":
    main()
