"""The project's CSVLogger keeps earlier columns and rows when a logger copied from before them (what each
``ddp_spawn`` stage unpickles) writes new columns to the same metrics.csv."""

from __future__ import annotations

import csv
import pickle

from common.utils.csv_logger import CSVLogger


def _read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_a_stage_in_a_new_process_adds_columns_and_keeps_earlier_rows(tmp_path):
    parent = CSVLogger(tmp_path, name="csv")
    parent.log_hyperparams({"lr": 0.1})  # launch.py does this before fit: the writer exists in the parent
    snapshot = pickle.dumps(parent)

    fit = pickle.loads(snapshot)  # the fit workers' copy
    fit.log_metrics({"train/loss": 1.5, "lr-SGD": 0.1}, step=0)
    fit.log_metrics({"train/loss": 1.0, "lr-SGD": 0.1}, step=1)
    fit.save()

    test = pickle.loads(snapshot)  # the test workers' copy: never saw the fit's columns
    test.log_metrics({"test/acc": 0.75}, step=2)
    test.save()

    header, rows = _read(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert header == ["lr-SGD", "step", "test/acc", "train/loss"]
    assert [r["train/loss"] for r in rows] == ["1.5", "1.0", ""]
    assert [r["test/acc"] for r in rows] == ["", "", "0.75"]
