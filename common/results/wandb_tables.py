"""Log the collected tables as wandb Tables (one ``eval`` run, offline unless ``WANDB_MODE`` says otherwise).

Each table becomes ``wandb.Table`` under the key ``<method>/<table id>`` with the columns ``row``, ``label``,
``kind`` (``ours`` / ``published`` / ``delta``, or ``n`` the number of seeds) and one column per table column
(numbers; None where there is no value). ``make tables-wandb`` calls it; ``make wandb-sync`` uploads the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.results.collect import TableResult
from common.results.record import ROOT

__all__ = ["log_tables", "table_rows"]


def table_rows(table: TableResult) -> tuple[list[str], list[list]]:
    """``(columns, data)`` of one table in the long form that wandb Tables hold."""
    columns = ["row", "label", "kind", *table.columns]
    data = []
    for row in table.rows:
        cells = [row.cells[c] for c in table.columns]
        data.append([row.key, row.label, "ours", *(c.mean for c in cells)])
        data.append([row.key, row.label, "std", *(c.std for c in cells)])
        data.append([row.key, row.label, "n", *(c.n for c in cells)])
        data.append([row.key, row.label, "published", *(c.published for c in cells)])
        data.append([row.key, row.label, "delta", *(c.delta for c in cells)])
    return columns, data


def log_tables(
    tables: list[TableResult],
    *,
    project: str = "robust-retrieval",
    save_dir: str | Path | None = None,
    mode: str | None = None,
) -> Path:
    """Log every table in one wandb run (``job_type="eval"``, ``group="tables"``); return the run's local folder."""
    import wandb

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    save_dir = Path(save_dir) if save_dir is not None else ROOT / "logs" / "tables"
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project, job_type="eval", group="tables", name="tables", dir=str(save_dir), mode=mode, reinit=True
    )
    try:
        for table in tables:
            columns, data = table_rows(table)
            run.log({f"{table.method}/{table.id}": wandb.Table(columns=columns, data=data, allow_mixed_types=True)})
        run_dir = Path(run.dir).parent  # <save_dir>/wandb/offline-run-*/files -> the run folder
    finally:
        run.finish()
    return run_dir
