"""The table collector: DyML inter-set / intra-set averages and published numbers in their own column."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.utils.runs import write_status
from happier import table

ROOT = Path(__file__).resolve().parents[2]


def _write(runs: Path, row: str, metrics: dict) -> None:
    (runs / row).mkdir(parents=True)
    (runs / row / "metrics.json").write_text(json.dumps(metrics))


def test_dyml_rows_are_averaged_like_the_paper(tmp_path: Path) -> None:
    _write(tmp_path, "dyml_vehicle_happier", {"test/map": 0.2, "test/recall@1": 0.5})
    _write(tmp_path, "dyml_vehicle_happier_middle", {"test/map": 0.4, "test/recall@1": 0.7})
    _write(tmp_path, "dyml_vehicle_happier_coarse", {"test/map": 0.9, "test/recall@1": 0.9})
    _write(tmp_path, "dyml_product_csl", {"test/map": 0.1, "test/level1/map": 0.2, "test/level2/map": 0.6})
    _write(tmp_path, "sop_happier", {"test/hap": 0.55, "test/recall@1": 0.8})
    m = table.row_metrics(tmp_path, "dyml_vehicle", "happier")
    assert m["average_map"] == pytest.approx(0.5) and m["test/recall@1"] == pytest.approx(0.7) and m["sets_found"] == 3
    assert table.row_metrics(tmp_path, "dyml_product", "csl")["average_map"] == pytest.approx(0.3)
    assert table.row_metrics(tmp_path, "sop", "csl") is None
    text = table.build_table(tmp_path, ROOT / "results" / "happier" / "published.yaml")
    assert "| HAPPIER | `happier/dyml_vehicle_happier` | 50.00 |" in text
    assert "Average-mAP 37.0" in text  # the published number, in its own column
    assert "| CSL | `happier/sop_csl` | not run |" in text
    assert "| HAPPIER | `happier/sop_happier` | 55.00 |" in text and "R@1 81.0" in text


def test_unfinished_rows_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="common.utils.runs")  # whatever another test did to the root level
    _write(tmp_path, "sop_csl", {"test/hap": 0.1})
    write_status(tmp_path / "sop_csl", {"status": "interrupted", "signal": "SIGTERM"})
    assert table.row_metrics(tmp_path, "sop", "csl") is None
    assert "the run is interrupted (stopped by SIGTERM)" in caplog.text
    assert "| CSL | `happier/sop_csl` | not run |" in table.build_table(
        tmp_path, ROOT / "results" / "happier" / "published.yaml"
    )
