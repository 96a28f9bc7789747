"""`make report`: the report builder (records -> paper tables, demos), its plots, and the HTML rendered by headless
Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from common.report.build import build
from common.report.markdown import to_html
from common.report.plots import interpolated_pr_curve
from common.results.record import write_record


def test_pr_curve_matches_sklearn_per_query_interpolation():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    levels, ours = interpolated_pr_curve(z, y, points=11)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = []
    for q in range(len(z)):
        others = np.arange(len(z)) != q
        rel = (y[others] == y[q]).astype(int)
        if rel.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(rel, zn[others] @ zn[q])
        precision, recall = precision[:-1], recall[:-1]  # drop sklearn's artificial (recall 0, precision 1) end
        expected.append([precision[recall >= r - 1e-12].max() for r in np.linspace(0, 1, 11)])
    np.testing.assert_allclose(ours, np.mean(expected, axis=0), atol=1e-5)


def _sklearn_interpolated(scores: np.ndarray, relevant: np.ndarray, points: int) -> np.ndarray | None:
    if relevant.sum() == 0:
        return None
    precision, recall, _ = precision_recall_curve(relevant.astype(int), scores)
    precision, recall = precision[:-1], recall[:-1]
    return np.array([precision[recall >= r - 1e-12].max() for r in np.linspace(0, 1, points)])


def test_pr_curve_query_gallery_and_multilabel_sets_match_sklearn():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 6))
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    # query/gallery: the first 15 rows query the other 35 (no self-exclusion, queries never in the gallery)
    y = rng.integers(0, 5, 50)
    expected = [_sklearn_interpolated(zn[15:] @ zn[q], y[15:] == y[q], 11) for q in range(15)]
    _, ours = interpolated_pr_curve(z, y, points=11, num_queries=15)
    np.testing.assert_allclose(ours, np.mean([e for e in expected if e is not None], axis=0), atol=1e-5)
    # multi-label bool [N, C]: relevant = the same set of labels (not column 0)
    sets = rng.integers(0, 2, size=(50, 3)).astype(bool)
    same = (sets[:, None, :] == sets[None, :, :]).all(axis=2)
    expected = []
    for q in range(50):
        others = np.arange(50) != q
        expected.append(_sklearn_interpolated(zn[others] @ zn[q], same[q, others], 11))
    _, ours = interpolated_pr_curve(z, sets, points=11)
    np.testing.assert_allclose(ours, np.mean([e for e in expected if e is not None], axis=0), atol=1e-5)
    _, by_column0 = interpolated_pr_curve(z, sets[:, :1].repeat(3, axis=1).astype(np.int64), points=11)
    assert not np.allclose(ours, by_column0)  # the set, not its first column, decides


def test_markdown_tables_and_lists():
    html = to_html('# T\n\n| a | b |\n|---|---|\n| 1 | `x` |\n\n- one\n- **two**\n\ntext [l](u)\n\n<a id="k"></a>\n')
    assert "<table>" in html and "<td><code>x</code></td>" in html
    assert "<li><strong>two</strong></li>" in html and '<a href="u">l</a>' in html
    assert '<a id="k"></a>' in html  # the anchors that the summary links to pass through


def _fixture(tmp_path: Path) -> tuple[Path, Path]:
    demo, results = tmp_path / "demo", tmp_path / "results"
    (demo / "artifacts").mkdir(parents=True)
    (demo / "roadmap.md").write_text(
        "## ROADMAP demo\n\n| model | R@1 |\n|---|---|\n| roadmap | 0.81 |\n\n`make demo-roadmap`\n"
    )
    (demo / "roadmap.json").write_text(
        json.dumps({"claim": {"text": "ROADMAP beats SmoothAP.", "holds": False, "detail": "0.81 vs 0.83."}})
    )
    rng = np.random.default_rng(0)
    np.savez(
        demo / "artifacts" / "roadmap_retrieval_roadmap.npz",
        embeddings=rng.normal(size=(40, 4)),
        labels=rng.integers(0, 4, 40),
    )
    np.savez(demo / "artifacts" / "heat_ood_energy.npz", id=rng.normal(size=50), **{"ood/digits": rng.normal(1, 1, 30)})
    (demo / "artifacts" / "roadmap_curve_roadmap.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    from common.report import plots

    plots.training_curves_png({"x": ([0, 1], [1, 0])}, demo / "gallop_heatmap.png", "t", "y")
    (results / "roadmap").mkdir(parents=True)
    (results / "roadmap" / "published.yaml").write_text(
        "method: roadmap\npaper: ROADMAP\nsources: {t1: arXiv 2110.01445 Table 1}\nnotes: [a note]\ntables:\n"
        "  main:\n    title: Main table\n    source: t1\n"
        "    columns: [{name: R@1, metric: recall@1}, {name: mAP@R, metric: map@r}]\n"
        "    rows:\n      sop: {label: ROADMAP SOP, published: {R@1: 83.1}}\n"
        "      cub: {label: ROADMAP CUB, published: {R@1: 68.5}}\n"
    )
    records = tmp_path / "records"
    for seed, r1 in ((0, 0.80), (1, 0.84)):
        write_record(
            method="roadmap", table="main", row="sop", seed=seed, metrics={"recall@1": r1}, records_dir=records
        )
    write_record(method="roadmap", table="demo", row="fmnist", seed=0, metrics={"map@r": 0.5}, records_dir=records)
    return demo, results


def test_report_builds_tables_pictures_and_honest_claims(tmp_path):
    demo, results = _fixture(tmp_path)
    out = tmp_path / "report"
    summary = build(demo, out, results, tmp_path / "records")
    md = (out / "REPORT.md").read_text()
    assert "| roadmap | 0.81 |" in md and "does NOT agree" in md and "arXiv 2110.01445 Table 1" in md
    # the paper table from the records: mean ± std over the two seeds, published, delta, markers
    assert "| ROADMAP SOP (`sop`) | ours | 82.00 ± 2.00 (n=2) | not logged |" in md
    assert "| | published | 83.1 | MISSING |" in md and "| | Δ | -1.10 |  |" in md
    assert "| ROADMAP CUB (`cub`) | ours | NO RECORD | NO RECORD |" in md
    assert "| roadmap | [Main table](#roadmap-main) | 1 / 4 | 2 |" in md  # the summary line links to the table
    assert "| fmnist (`fmnist`) | ours | 0.50 ± 0.00 (n=1) |" in md  # the demo's record, under its demo
    assert md.index("## Summary") < md.index("#### Main table") < md.index('<a id="demo-roadmap">')
    assert "No demo result yet: run `make demo-happier`" in md
    page = (out / "index.html").read_text()
    assert page.count("<table>") >= 4
    for link in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{link}"' in page, link
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert set(imgs) == set(summary["images"]) and len(imgs) == 5  # PR, hist, ROC, training, heatmap
    for src in imgs:
        assert (out / src).stat().st_size > 1000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    demo, results = _fixture(tmp_path)
    out = tmp_path / "report"
    build(demo, out, results, tmp_path / "records")
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        (out / "index.html").as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "<table>" in dom and "does NOT agree" in dom
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total and int(loaded.group(1)) == int(total.group(1)) == 5
    assert re.search(r'data-links-broken="0"', dom)  # every summary link lands on its table


def test_report_says_where_a_demo_run_differs_from_the_reference_beyond_noise(tmp_path):
    demo, results = _fixture(tmp_path)
    reference = tmp_path / "reference"
    # this run: map@r 0.40 ± 0.016 and recall@1 0.70 ± 0.0082; the reference: 0.41 (within 2 x std) and 0.80 (beyond)
    for seed, (m, r1) in enumerate([(0.38, 0.69), (0.40, 0.70), (0.42, 0.71)]):
        metrics = {"map@r": m, "recall@1": r1}
        write_record(
            method="roadmap", table="demo", row="roadmap", seed=seed, metrics=metrics, records_dir=demo / "records"
        )
        ref = {"map@r": 0.41, "recall@1": 0.80 + 0.001 * seed}
        write_record(
            method="roadmap", table="demo", row="roadmap", seed=seed, metrics=ref, records_dir=reference / "records"
        )
    out = tmp_path / "report"
    build(demo, out, results, tmp_path / "records", reference_dir=reference)
    md = (out / "REPORT.md").read_text()
    section = md[md.index('<a id="demo-vs-reference">') :]
    assert "Compared: 2 (row, metric) pairs; beyond noise: 1;" in section
    assert (
        "| roadmap | roadmap | recall@1 | 0.7000 ± 0.0082 (n=3) | 0.8010 ± 0.0008 (n=3) | -0.1010 | 0.0163 |" in section
    )
    assert "| map@r |" not in section
    assert "[demo vs reference](#demo-vs-reference)" in md
    # the reference run itself is not compared with itself
    build(reference, out, results, tmp_path / "records", reference_dir=reference)
    assert "demo-vs-reference" not in (out / "REPORT.md").read_text()
