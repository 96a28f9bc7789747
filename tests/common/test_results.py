"""Result records, the one published.yaml shape, the collector (mean ± std, published, Δ, markers) and the wandb
Tables, checked on hand-written records with hand-worked numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from common.results.collect import collect, main, to_markdown
from common.results.published import PublishedError, load_published
from common.results.record import (
    SCHEMA_VERSION,
    ResultRecord,
    load_records,
    record_path,
    write_demo_record,
    write_record,
)
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("roadmap", "happier", "heat", "gallop")

PUBLISHED = """
method: roadmap
paper: "A paper"
sources: {p: "Paper, Table 2"}
tables:
  main:
    title: "Main"
    source: p
    columns:
      - {name: R@1, metric: recall@1}
      - {name: mAP@R, metric: map@r}
      - {name: Average-mAP, mean_of: [map, level1/map]}
    rows:
      a: {label: A, published: {R@1: 83.1, mAP@R: null}}
      pooled: {label: Pooled, published: {}, ours: [p_fine, p_middle, p_coarse]}
      only_published: {label: Theirs, published: {R@1: 70.0}, ours: null}
      never_run: {label: Never, published: {}}
  cols:
    title: "Per column"
    scale: 1
    columns:
      - {name: x, metric: "acc/{score}"}
      - {name: y, metric: "acc/{score}"}
      - {name: avg, mean_of_columns: [x, y]}
    rows:
      m: {label: M, published: {avg: 50.0}, ours: {x: rx, y: ry}, params: {score: s1}}
"""


def _rec(records: Path, row: str, seed: int, table: str = "main", **metrics: float) -> None:
    write_record(method="roadmap", table=table, row=row, seed=seed, metrics=metrics, records_dir=records)


@pytest.fixture
def tables(tmp_path: Path):
    (tmp_path / "results" / "roadmap").mkdir(parents=True)
    (tmp_path / "results" / "roadmap" / "published.yaml").write_text(PUBLISHED)
    rec = tmp_path / "records"
    for seed, r1 in ((1, 0.80), (2, 0.82), (3, 0.87)):
        _rec(rec, "a", seed, **{"test/recall@1": r1, "test/map": 0.1 * seed, "test/level1/map": 0.3})
    _rec(rec, "p_fine", 0, map=0.2)
    _rec(rec, "p_middle", 0, map=0.4)
    _rec(rec, "p_coarse", 0, map=0.9)
    _rec(rec, "p_fine", 1, map=0.5)  # seed 1 has no middle/coarse record: it does not count
    for seed, (x, y) in ((0, (40.0, 60.0)), (1, (44.0, 70.0))):
        _rec(rec, "rx", seed, **{"acc/s1": x, "acc/s2": -1.0})
        _rec(rec, "ry", seed, **{"acc/s1": y})
    write_demo_record("roadmap", "demo_row", 0, {"test/recall@1": 0.5}, records_dir=rec)
    return {t.id: t for t in collect(load_records(rec), tmp_path / "results", ("roadmap",))}


def test_mean_std_delta_by_hand(tables):
    a = {r.key: r for r in tables["main"].rows}["a"]
    r1 = a.cells["R@1"]
    assert r1.mean == pytest.approx(83.0) and r1.n == 3  # (80 + 82 + 87) / 3
    assert r1.std == pytest.approx(math.sqrt((9 + 1 + 16) / 3))  # population std over the seeds
    assert r1.published == 83.1 and r1.delta == pytest.approx(-0.1)
    assert a.cells["mAP@R"].status == "not_logged" and a.cells["mAP@R"].published is None
    avg = a.cells["Average-mAP"]  # per seed (map + level1/map) / 2 x 100: 20, 25, 30
    assert avg.mean == pytest.approx(25.0) and avg.std == pytest.approx(math.sqrt(50 / 3))


def test_pooled_rows_published_only_and_no_record(tables):
    rows = {r.key: r for r in tables["main"].rows}
    pooled = rows["pooled"].cells["R@1"]
    assert pooled.status == "not_logged"
    rows_cells = rows["pooled"].cells
    assert rows_cells["mAP@R"].status == "not_logged"
    assert rows["only_published"].cells["R@1"].status == "not_ours"
    assert rows["never_run"].cells["R@1"].status == "no_record"
    md = to_markdown(tables["main"])
    assert "| A (`a`) | ours | 83.00 ± 2.94 (n=3) | not logged | 25.00 ± 4.08 (n=3) |" in md
    assert "| | published | 83.1 | MISSING | MISSING |" in md and "| | Δ | -0.10 |  |  |" in md
    assert "| Theirs | ours | — | — | — |" in md and "| Never (`never_run`) | ours | NO RECORD |" in md
    assert "Published values: Paper, Table 2." in md


def test_pooled_mean_over_the_three_sets(tmp_path):
    (tmp_path / "results" / "roadmap").mkdir(parents=True)
    text = PUBLISHED.replace("- {name: R@1, metric: recall@1}", "- {name: R@1, metric: map}")
    (tmp_path / "results" / "roadmap" / "published.yaml").write_text(text)
    rec = tmp_path / "records"
    for row, v in (("p_fine", 0.2), ("p_middle", 0.4), ("p_coarse", 0.9)):
        _rec(rec, row, 0, map=v)
    _rec(rec, "p_fine", 1, map=0.5)
    table = next(t for t in collect(load_records(rec), tmp_path / "results", ("roadmap",)) if t.id == "main")
    cell = {r.key: r for r in table.rows}["pooled"].cells["R@1"]
    assert cell.mean == pytest.approx(50.0) and cell.n == 1 and cell.std == 0.0  # (20 + 40 + 90) / 3, seed 0 only


def test_columns_per_row_params_and_mean_of_columns(tables):
    m = tables["cols"].rows[0].cells
    assert m["x"].mean == pytest.approx(42.0) and m["y"].mean == pytest.approx(65.0)  # acc/s1, scale 1
    assert m["avg"].mean == pytest.approx(53.5)  # per seed (40+60)/2=50, (44+70)/2=57
    assert m["avg"].std == pytest.approx(3.5) and m["avg"].delta == pytest.approx(3.5)


def test_records_of_no_published_table_get_their_own_table(tables):
    demo = tables["demo"]  # write_demo_record: table "demo"
    assert demo.columns == ["recall@1"] and len(demo.rows) == 1
    assert demo.rows[0].key == "demo_row" and demo.rows[0].cells["recall@1"].mean == pytest.approx(0.5)


def test_record_round_trip_and_errors(tmp_path):
    rec = write_record(
        method="gallop", table="few_shot", row="dtd_16shot", seed=1, metrics={"test/acc": 70.0}, records_dir=tmp_path
    )
    path = record_path(tmp_path, "gallop", "few_shot", "dtd_16shot", 1)
    assert path == tmp_path / "gallop" / "few_shot" / "dtd_16shot-s1.json"
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["metrics"] == {"acc": 70.0}
    assert data["published"] == {"few_shot/dtd": 75.5, "few_shot/average": 84.4}  # results/gallop/published.yaml
    assert data["git_commit"] and isinstance(data["git_dirty"], bool) and "CPU:" in data["hardware"]
    assert load_records(tmp_path) == [rec]
    with pytest.raises(ValueError, match="non-empty `row`"):
        ResultRecord(method="roadmap", table="main", row="", seed=0, metrics={})
    path.write_text(json.dumps({**data, "schema_version": 0}))
    with pytest.raises(ValueError, match="dtd_16shot-s1.json is not a valid result record.*schema_version 0"):
        load_records(tmp_path)


@pytest.mark.parametrize("method", METHODS)
def test_every_published_yaml_has_the_one_shape(method):
    pub = load_published(ROOT / "results" / method / "published.yaml")
    assert pub.method == method and pub.tables
    for table in pub.tables.values():
        for row in table.rows.values():
            assert set(row.published) == {c.name for c in table.columns}
            cite = pub.cite(row.source or table.source)
            assert cite and "specs/" not in cite  # every value has a citation; no internal notes cited


def test_a_wrong_shape_names_the_problem(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED.replace("R@1: 83.1", "R@2: 83.1"))
    with pytest.raises(PublishedError, match=r"tables.main.rows.a: published values for unknown column\(s\) \['R@2'\]"):
        load_published(path)
    path.write_text(PUBLISHED.replace("R@1: 83.1", "R@1: '83.1'"))
    with pytest.raises(PublishedError, match="must be a number or null"):
        load_published(path)
    path.write_text(PUBLISHED.replace('title: "Main"', "titel: x"))
    with pytest.raises(PublishedError, match=r"unknown key\(s\) \['titel'\]"):
        load_published(path)


def _experiment_rows(method: str) -> dict[str, str]:
    """``{row: table}`` that the experiments of ``method`` declare (interpolated keys expanded)."""
    out = {}
    for f in sorted((ROOT / "configs" / "experiment" / method).glob("*.yaml")):
        cfg = yaml.safe_load(f.read_text())
        if not cfg.get("row") or cfg.get("table") in (None, "demo"):  # the demos: no paper table (table in a _base)
            continue
        for variant in ("fine", "middle", "coarse") if "${dyml_benchmark}" in cfg["row"] else ("",):
            for shots in (16, 1, 2, 4, 8) if "${data.shots}" in cfg["row"] else (16,):
                row = cfg["row"].replace("${dyml_benchmark}", variant).replace("${data.shots}", str(shots))
                row = re.sub(r"\$\{eval:.*\}$", "", row)  # GalLoP's sampling suffix: empty with the default sampling
                out[row] = cfg["table"]
    return out


@pytest.mark.parametrize("method", METHODS)
def test_experiment_rows_and_published_tables_agree(method):
    pub = load_published(ROOT / "results" / method / "published.yaml")
    declared = _experiment_rows(method)
    assert declared, f"no experiment of {method} declares table/row"
    if method == "heat":  # heat.evaluate writes one record per scorer: row <row>_<scorer>
        expected = {r for t in pub.tables.values() for spec in t.rows.values() for r in spec.all_rows()}
        assert {r.split("_", 1)[0] for r in expected} == set(declared)
        return
    used = {r for t in pub.tables.values() for spec in t.rows.values() for r in spec.all_rows()}
    # GalLoP's rows with the original's few-shot subsets: the same experiments with data.sampling=gallop_parity
    parity = {r for r in used if r.endswith("_gallop_parity")}
    assert {r.removesuffix("_gallop_parity") for r in parity} <= set(declared)
    used -= parity
    assert used == set(declared), (sorted(used - set(declared)), sorted(set(declared) - used))
    for row, table in declared.items():  # the declared table holds the row (GalLoP's ImageNet rows fill several)
        assert any(row in spec.all_rows() for spec in pub.tables[table].rows.values()) or method == "gallop"


def test_the_callback_writes_the_record_of_a_launcher_run(tmp_path, tiny_fmnist, monkeypatch):
    from common.launch import run

    records = tmp_path / "records"
    monkeypatch.setenv("RESULTS_RECORDS_DIR", str(records))
    cfg = compose_train(
        ["experiment=demo/fmnist_contrastive", "logger=csv", "debug=fdr", f"paths.data_dir={tiny_fmnist}"], tmp_path
    )
    with open_dict(cfg):
        cfg.table, cfg.row = "demo", "fmnist_contrastive"
        cfg.data.train_dataset.subset = None
        cfg.data.test_dataset.subset = None
        cfg.data.batch_size = 20
        cfg.data.sampler.m = 2
    metrics, _ = run(cfg)
    (record,) = load_records(records)
    assert (record.method, record.table, record.row, record.seed) == ("demo", "demo", "fmnist_contrastive", cfg.seed)
    assert record.metrics["map@r"] == pytest.approx(metrics["test/map@r"])
    assert record.dataset == "fashion_mnist" and record.wall_time_s > 0 and record.run_dir == str(tmp_path)
    assert json.loads((tmp_path / "record.json").read_text()) == record.to_dict()


def test_make_tables_writes_markdown_and_json(tmp_path, capsys):
    rec = tmp_path / "records"
    write_record(
        method="happier", table="sop", row="sop_happier", seed=0, metrics={"test/recall@1": 0.8}, records_dir=rec
    )
    main(["--records", str(rec), "--out", str(tmp_path / "tables")])
    md = (tmp_path / "tables" / "happier.md").read_text()
    assert re.search(
        r"\| HAPPIER \(`sop_happier`\) \| ours \| not logged(?: \| not logged)* \| 80.00 ± 0.00 \(n=1\) \|", md
    )
    assert "| | Δ |  |  |  |  |  | -1.00 |" in md  # 80.0 - 81.0
    data = json.loads((tmp_path / "tables" / "tables.json").read_text())
    assert {t["method"] for t in data} == set(METHODS)


def test_wandb_tables_read_back_from_the_offline_run(tables, tmp_path, monkeypatch):
    from common.results.wandb_tables import log_tables

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = log_tables(list(tables.values()), save_dir=tmp_path / "wb")
    assert run_dir.name.startswith("offline-run-")
    files = {p.name.split("_")[0]: p for p in (run_dir / "files" / "media" / "table").rglob("*.table.json")}
    main_table = json.loads(
        next(p for p in (run_dir / "files" / "media" / "table").rglob("main_*.table.json")).read_text()
    )
    assert files and main_table["columns"] == ["row", "label", "kind", "R@1", "mAP@R", "Average-mAP"]
    rows = {(r[0], r[2]): r[3:] for r in main_table["data"]}
    assert rows[("a", "ours")][0] == pytest.approx(83.0) and rows[("a", "published")][0] == 83.1
    assert rows[("a", "delta")][0] == pytest.approx(-0.1) and rows[("a", "n")][0] == 3
