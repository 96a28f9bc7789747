"""`make rehearse`: the tiny layouts pass the same checks as `make data-*`, every `make table-*` target is covered,
the empty-cell check names what is empty, and (slow) the whole rehearsal fills every table of every method."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import common  # noqa: F401  (registers the resolvers)
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
    out = tmp_path / "rehearsal"
    empty = rehearsal.rehearse(out, rehearsal.TARGETS)
    assert empty == [], "empty cells of ours:\n" + "\n".join(empty)
    tables = json.loads((out / "tables" / "tables.json").read_text())
    assert {t["method"] for t in tables} >= {"roadmap", "happier", "heat", "gallop"}
    assert (out / "report" / "index.html").is_file()
    timings = json.loads((out / "timings.json").read_text())
    run = [(t["method"], t["target"]) for t in timings["targets"]]
    expected = [(m, e.split()[0]) for m, entries in rehearsal.TARGETS.items() for e in entries]
    assert run == [("-", "write tiny datasets"), *expected, ("-", "tables"), ("-", "report")]
    assert timings["cpu_s"] > 0 and timings["wall_s"] > 0


# ------------------------------------------------------------------ the multiruns that the table targets start
def _launches(tmp_path: Path, *targets: str, **variables: str) -> list[list[str]]:
    """The arguments of every ``python -m common.launch`` that ``make <targets>`` starts, recorded by a stand-in
    interpreter (``VENV`` points at a folder whose ``bin/python`` only writes its arguments down)."""
    log = tmp_path / "calls.jsonl"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        f"#!{sys.executable}\nimport json, sys\nwith open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    python.chmod(0o755)
    (tmp_path / "venv" / ".installed").touch()
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), *targets, f"VENV={tmp_path / 'venv'}", "ARGS="]
    cmd += ["GALLOP_ARGS=", *(f"{k}={v}" for k, v in variables.items())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [c[2:] for c in calls if c[:2] == ["-m", "common.launch"]]


def _job_folder(overrides: list[str], experiment: str, **values) -> str:
    """The job folder (``hydra.sweep.subdir``) that Hydra resolves for one job of the multirun."""
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    cfg = OmegaConf.create({"experiment_name": experiment, "sub": parsed["hydra.sweep.subdir"], **values})
    return cfg.sub


def test_a_happier_table_is_one_multirun_and_its_dyml_tests_another(tmp_path):
    train, tests = _launches(tmp_path, "table-happier-dyml-vehicle", HAPPIER_RUNS="/r")
    assert train[0] == "-m" and tests[0] == "-m"
    parser = OverridesParser.create()
    rows = [f"happier/dyml_vehicle_{m}" for m in ("happier", "csl", "roadmap", "nsm")]
    sweeps = {o.key_or_group: o for o in parser.parse_overrides(train[1:])}
    assert list(sweeps["experiment"].sweep_string_iterator()) == rows
    assert sweeps["hydra.sweep.dir"].value() == "/r/dyml_vehicle"
    assert _job_folder(train[1:], rows[0]) == "dyml_vehicle_happier"
    # the tests: every row x {middle, coarse}, each reading its row's last checkpoint
    t = {o.key_or_group: o for o in parser.parse_overrides(tests[1:])}
    assert list(t["dyml_benchmark"].sweep_string_iterator()) == ["middle", "coarse"]
    cfg = OmegaConf.create(
        {"experiment_name": rows[1], "dyml_benchmark": "coarse", "ckpt": t["ckpt_path"].value(), "sub": None}
    )
    cfg.sub = t["hydra.sweep.subdir"].value()
    assert cfg.ckpt == "/r/dyml_vehicle/dyml_vehicle_csl/checkpoints/last.ckpt"
    assert cfg.sub == "dyml_vehicle_csl_coarse"


def test_heat_rows_train_in_one_multirun_into_the_folders_that_the_evaluation_reads(tmp_path):
    launches = _launches(tmp_path, "train-heat", HEAT_RUNS="/h", HEAT_DATASETS="cifar10 imagenet", HEAT_ROWS="el gmm")
    assert len(launches) == 1 and launches[0][0] == "-m"
    sweeps = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(launches[0][1:])}
    rows = ["heat/cifar10_el", "heat/cifar10_gmm", "heat/imagenet_el", "heat/imagenet_gmm"]
    assert list(sweeps["experiment"].sweep_string_iterator()) == rows
    assert sweeps["hydra.sweep.dir"].value() == "/h"
    # table-heat-eval reads $(HEAT_RUNS)/<dataset>_<row>/checkpoints/last.ckpt
    assert [_job_folder(launches[0][1:], r) for r in rows] == [
        "cifar10_el",
        "cifar10_gmm",
        "imagenet_el",
        "imagenet_gmm",
    ]


def test_gallop_tables_are_multiruns_over_datasets_and_seeds(tmp_path):
    launches = _launches(
        tmp_path,
        "table-gallop",
        "table-gallop-shots",
        GALLOP_RUNS="/g",
        GALLOP_DATASETS="imagenet dtd",
        GALLOP_SEEDS="1 2",
    )
    assert all(args[0] == "-m" for args in launches) and len(launches) == 1 + 4 + 1  # 16 shots, 1/2/4/8, ImageNet
    parsed = [{o.key_or_group: o for o in OverridesParser.create().parse_overrides(a[1:])} for a in launches]
    assert list(parsed[0]["experiment"].sweep_string_iterator()) == ["gallop/imagenet_16shot", "gallop/dtd_16shot"]
    assert list(parsed[0]["seed"].sweep_string_iterator()) == ["1", "2"]
    assert [p["hydra.sweep.dir"].value() for p in parsed] == [f"/g/shots{k}" for k in ("16", "1", "2", "4", "8")] + [
        "/g/shots1-8_imagenet"
    ]
    assert parsed[1]["experiment"].value() == "gallop/dtd_16shot"  # ImageNet has its own epochs at every shot count
    assert list(parsed[-1]["data.shots"].sweep_string_iterator()) == ["1", "2", "4", "8"]
    folder = _job_folder(launches[0][1:], "gallop/dtd_16shot", data={"shots": 16}, seed=2)
    assert folder == "dtd_16shot/shots16/seed2"


def test_basename_resolver():
    cfg = OmegaConf.create({"e": "happier/sop_happier", "b": "${basename:${e}}", "c": "${basename:sop}"})
    assert (cfg.b, cfg.c) == ("sop_happier", "sop")


def test_run_make_times_a_target_and_names_a_failure(tmp_path):
    env = rehearsal.environment(tmp_path)
    wall, cpu = rehearsal.run_make("help", [], env, tmp_path / "log")
    assert wall > 0 and cpu >= 0 and "### make help" in (tmp_path / "log").read_text()
    with pytest.raises(RuntimeError, match="no-such-target` failed"):
        rehearsal.run_make("no-such-target", [], env, tmp_path / "log")


def test_lanes_report_every_failure(tmp_path, monkeypatch):
    calls = []

    def fake_run_make(target, variables, env, log):
        calls.append(target)
        if target.startswith("bad"):
            raise RuntimeError(f"`make {target}` failed")
        return 1.0, 0.5

    monkeypatch.setattr(rehearsal, "run_make", fake_run_make)
    targets = {"roadmap": ["a", "bad-1", "never"], "heat": ["b", "c"], "gallop": ["bad-2"]}
    with pytest.raises(SystemExit) as e:
        rehearsal.run_lanes(targets, tmp_path, {}, jobs=2)
    assert "bad-1" in str(e.value) and "bad-2" in str(e.value)
    assert "never" not in calls and {"a", "b", "c"} <= set(calls)
    timings = rehearsal.run_lanes({"heat": ["b", "c"]}, tmp_path, {}, jobs=2)
    assert [(t.method, t.target, t.wall_s, t.cpu_s) for t in timings] == [
        ("heat", "b", 1.0, 0.5),
        ("heat", "c", 1.0, 0.5),
    ]


def test_variables_given_to_make_rehearse_do_not_reach_its_makes(tmp_path, monkeypatch):
    """`make rehearse ARGS="--out x"` exports ARGS to the rehearsal: `make tables` must not read it as its own ARGS."""
    monkeypatch.setenv("MAKEFLAGS", r" -- ARGS=--out\ /tmp/x XBM_ARGS=a=1")
    monkeypatch.setenv("ARGS", "--out /tmp/x")
    monkeypatch.setenv("XBM_ARGS", "a=1")
    monkeypatch.setenv("MAKELEVEL", "1")
    env = rehearsal.environment(tmp_path)
    assert not {"ARGS", "XBM_ARGS", "MAKEFLAGS", "MAKELEVEL"} & set(env)
    assert env["RESULTS_TABLES_DIR"] == str(tmp_path / "tables") and "PATH" in env
