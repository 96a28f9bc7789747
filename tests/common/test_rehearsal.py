"""`make rehearse`: the tiny layouts pass the same checks as `make data-*`, every `make table-*` target is covered,
the empty-cell check names what is empty, and (slow) the whole rehearsal fills every table of every method."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common.data.catalogue import DATASETS
from common.data.download import verify
from common.rehearsal import run as rehearsal
from common.rehearsal.check import empty_cells
from common.rehearsal.layouts import write_all
from tests.conftest import ROOT

# datasets that no table reads (In-Shop, OpenOOD's lists): not written by the rehearsal
NOT_REHEARSED = {"inshop", "openood"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("rehearsal") / "data")


@pytest.mark.parametrize("ds", [d for d in DATASETS if d.name not in NOT_REHEARSED], ids=lambda d: d.name)
def test_every_layout_passes_the_data_target_checks(data_dir, ds):
    """The layout paths and every reader of the dataset, as `make data-<name>` checks what it installed."""
    assert verify(ds, data_dir) == []


def test_every_table_target_is_rehearsed():
    text = "".join(p.read_text() for p in sorted((ROOT / "mk").glob("*.mk")))
    tables = set(re.findall(r"^(table-[a-z0-9-]+):", text, flags=re.M))
    run = {e.split()[0] for names in rehearsal.TARGETS.values() for e in names}
    assert set(rehearsal.REACHED_BY) <= tables
    assert tables - run - set(rehearsal.REACHED_BY) == set()
    assert set(rehearsal.REACHED_BY.values()) <= run
    defined = set(re.findall(r"^([a-z0-9-]+):", text, flags=re.M))
    for names in (rehearsal.TARGETS, rehearsal.CI_TARGETS):
        assert {e.split()[0] for ts in names.values() for e in ts} <= defined


def test_empty_cells_are_named(tmp_path):
    cell = {"mean": 1.0, "std": 0.0, "n": 1, "published": None, "delta": None, "status": "ok"}
    tables = [
        {
            "method": "roadmap",
            "id": "main",
            "columns": ["R@1", "mAP@R"],
            "rows": [
                {"key": "a", "cells": {"R@1": cell, "mAP@R": {**cell, "mean": None, "status": "not_logged"}}},
                {"key": "b", "cells": {"R@1": {**cell, "status": "no_record", "mean": None}, "mAP@R": cell}},
                {"key": "c", "cells": {"R@1": {**cell, "status": "not_ours"}, "mAP@R": {**cell, "status": "not_ours"}}},
            ],
        },
        {"method": "heat", "id": "cifar10", "columns": ["x"], "rows": [{"key": "d", "cells": {"x": cell}}]},
    ]
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(tables))
    assert empty_cells(path) == [
        "roadmap/main row a column mAP@R: not logged",
        "roadmap/main row b column R@1: NO RECORD",
    ]
    assert empty_cells(path, methods=["heat"]) == []
    assert "no tables.json" in empty_cells(tmp_path / "missing.json")[0]


@pytest.mark.slow
def test_make_rehearse_fills_every_table_of_every_method(tmp_path):
    """The whole rehearsal: every `make table-*` target on the tiny layouts, then `make tables` and `make report`."""
    empty = rehearsal.rehearse(tmp_path / "rehearsal", rehearsal.TARGETS)
    assert empty == []
    tables = json.loads((tmp_path / "rehearsal" / "tables" / "tables.json").read_text())
    assert {t["method"] for t in tables} >= {"roadmap", "happier", "heat", "gallop"}
    assert (tmp_path / "rehearsal" / "report" / "index.html").is_file()
