"""Copy what the report plots out of a launcher run folder into ``<demo out>/artifacts/`` (``outputs/demo/artifacts``).

The demo's run folders live under ``<demo out>/runs`` (git-ignored); the artifacts are small (the reference run's
are committed under ``results/reference/artifacts``) and enough for ``make report`` on a fresh clone:

* ``<method>_retrieval_<model>.npz``: the test embeddings (float16, L2-normalised) and labels, from the run's
  ``test_embeddings.npz`` (``model.save_test_embeddings=true``); the report draws precision-recall curves from them;
* ``<method>_curve_<model>.csv``: ``step,loss`` of the training loss, from the run's CSV-logger ``metrics.csv``
  (``train/loss`` logged every ``trainer.log_every_n_steps`` steps); the report draws training curves from them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["export_loss_curve", "export_retrieval_run", "loss_curve_from_metrics_csv"]

LOSS_KEYS = ("loss", "train/loss", "train/loss_step", "train/loss_epoch")  # "loss": our exported step,loss files


def loss_curve_from_metrics_csv(path: Path) -> list[tuple[int, float]]:
    """``[(step, loss)]`` from a Lightning CSV-logger ``metrics.csv`` or an exported ``step,loss`` file (the first
    column of :data:`LOSS_KEYS` that the file has; rows without a value in it are skipped)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        key = next((k for k in LOSS_KEYS if k in columns), None)
        if key is None:
            raise ValueError(f"{path} has no training-loss column (looked for {list(LOSS_KEYS)}; found {columns})")
        return [(int(float(row["step"])), float(row[key])) for row in reader if row.get(key) not in (None, "")]


def export_retrieval_run(run_dir: str | Path, artifacts: str | Path, method: str, model: str) -> dict[str, str]:
    """Write ``<method>_retrieval_<model>.npz`` and ``<method>_curve_<model>.csv`` from ``run_dir``.

    Raises FileNotFoundError naming the missing file and the option that produces it.
    Returns the file names, ``{"embeddings": ..., "curve": ...}`` (relative to ``artifacts``).
    """
    run_dir, artifacts = Path(run_dir), Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    emb_file = run_dir / "test_embeddings.npz"
    if not emb_file.is_file():
        raise FileNotFoundError(f"{emb_file} is missing: run the launcher with model.save_test_embeddings=true")
    curve = export_loss_curve(run_dir, artifacts, method, model)
    data = np.load(emb_file)
    emb = data["embeddings"].astype(np.float32)  # [N, D]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    out_npz = artifacts / f"{method}_retrieval_{model}.npz"
    np.savez_compressed(out_npz, embeddings=emb.astype(np.float16), labels=data["labels"])
    return {"embeddings": out_npz.name, "curve": curve}


def export_loss_curve(run_dir: str | Path, artifacts: str | Path, method: str, model: str) -> str:
    """Write ``<method>_curve_<model>.csv`` (``step,loss``) from the newest ``metrics.csv`` under ``run_dir``;
    returns its name. Raises FileNotFoundError when the run has no CSV log."""
    run_dir, artifacts = Path(run_dir), Path(artifacts)
    found = sorted(run_dir.rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)  # newest last
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}: run the launcher with logger=csv")
    artifacts.mkdir(parents=True, exist_ok=True)
    out_csv = artifacts / f"{method}_curve_{model}.csv"
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        for step, loss in loss_curve_from_metrics_csv(found[-1]):
            writer.writerow([step, f"{loss:.6g}"])
    return out_csv.name
