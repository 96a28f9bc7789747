"""One result record per run: the schema, where it is written, and the writer every run path calls.

A record is a small JSON file, ``<records_dir>/<method>/<table>/<row>-s<seed>.json``, written at the end of a test or
evaluation run by ``common.callbacks.result_record.ResultRecordCallback`` (launcher runs), by ``heat.evaluate`` (one
record per scorer) and by the demos (``write_record``). ``common.results.collect`` turns the records plus
``results/<method>/published.yaml`` into the tables; ``make report`` shows them.

Metric keys are the names the method logs at test time without the ``test/`` prefix (``recall@1``, ``map@r``,
``hap``, ``acc``, ``dg/imagenet_v2/acc``, ``ood/inaturalist/gl_mcm/auroc``, ``cifar100/fpr95`` ...), in the units
they are logged in (retrieval and OOD metrics are fractions, GalLoP's accuracies percent); the key names per method
and how tables scale them are listed in docs/results.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "ResultRecord",
    "default_records_dir",
    "git_state",
    "hardware",
    "load_records",
    "published_for_row",
    "record_path",
    "write_demo_record",
    "write_record",
]

SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
_SAFE = re.compile(r"[^A-Za-z0-9_.+=@-]")


@dataclass
class ResultRecord:
    """What one run of one table row produced, and how to repeat it.

    ``metrics``: ``{key: value}`` as logged (no ``test/`` prefix); ``published``: the paper's values this row is
    compared with (``{"<table>/<column>": value or None}``, None = the paper gives none / it could not be read),
    empty when the row is in no published table. ``protocol``: settings that change what a number means beyond the
    row's config, as ``{name: value}`` strings (the launcher's records: ``precision`` and, for few-shot data, the
    ``sampling`` mode); the tables print them beside each row.
    """

    method: str
    table: str
    row: str
    seed: int | None
    metrics: dict[str, float]
    dataset: str | None = None
    backbone: str | None = None
    published: dict[str, float | None] = field(default_factory=dict)
    command: str = ""
    git_commit: str | None = None
    git_dirty: bool | None = None
    date: str = ""
    hardware: str = ""
    wall_time_s: float | None = None
    wandb_run_id: str | None = None
    run_dir: str | None = None
    protocol: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("method", "table", "row"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"a result record needs a non-empty `{name}` (got {value!r}); set the top-level config keys "
                    "`table` and `row` in the experiment (configs/experiment/<method>/<row>.yaml)"
                )
        bad = {k: v for k, v in self.metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        if bad:
            raise TypeError(f"record metrics must be numbers; got {bad}")
        self.metrics = {k: float(v) for k, v in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # JSON has no NaN: a metric that could not be computed is written as null
        d["metrics"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"result record schema_version {version!r} is not {SCHEMA_VERSION}: re-run the row or convert it"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown result record keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        data["metrics"] = {k: (math.nan if v is None else v) for k, v in (data.get("metrics") or {}).items()}
        return cls(**data)


def default_records_dir() -> Path:
    """``$RESULTS_RECORDS_DIR`` if set (tests point it at a temporary folder), else ``results/records``."""
    return Path(os.environ.get("RESULTS_RECORDS_DIR") or ROOT / "results" / "records")


def record_path(records_dir: str | Path, method: str, table: str, row: str, seed: int | None) -> Path:
    """``<records_dir>/<method>/<table>/<row>-s<seed>.json`` (characters unsafe in file names become ``_``)."""
    name = f"{_SAFE.sub('_', row)}-s{'none' if seed is None else seed}.json"
    return Path(records_dir) / _SAFE.sub("_", method) / _SAFE.sub("_", table) / name


def git_state(root: str | Path = ROOT) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout at ``root``; ``(None, None)`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def hardware() -> str:
    """The CPU model and core count, and the CUDA devices when there are any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"CPU: {cpu} ({os.cpu_count()} cores)"]
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            parts.append("GPU: " + ", ".join(names))
    return "; ".join(parts)


def published_for_row(method: str, row: str, results_dir: str | Path = ROOT / "results") -> dict[str, float | None]:
    """The published values that ``row`` is compared with, ``{"<table>/<column>": value or None}`` over every table
    of ``results/<method>/published.yaml`` where the row's records fill a cell (one row can fill several tables:
    GalLoP's ImageNet run); empty when the file or the row does not exist."""
    from common.results.published import load_published

    path = Path(results_dir) / method / "published.yaml"
    if not path.is_file():
        return {}
    out: dict[str, float | None] = {}
    for table in load_published(path).tables.values():
        for spec in table.rows.values():
            for col in table.columns:
                parts = col.mean_of_columns or (col.name,)
                if any(row in spec.ours_rows(c) for c in parts):
                    out[f"{table.id}/{col.name}"] = spec.published.get(col.name)
    return out


def write_record(
    *,
    method: str,
    table: str,
    row: str,
    seed: int | None,
    metrics: dict[str, float],
    records_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
    command: str | None = None,
    wall_time_s: float | None = None,
    wandb_run_id: str | None = None,
    published: dict[str, float | None] | None = None,
    protocol: dict[str, str] | None = None,
) -> ResultRecord:
    """Build one record (git state, date, hardware and published values filled in) and write it to the results
    tree (``records_dir``, default :func:`default_records_dir`) and, when given, to ``<run_dir>/record.json``.

    ``metrics`` may carry the ``test/`` prefix; it is removed. This is the function the demos call.
    """
    commit, dirty = git_state()
    metrics = {(k[len("test/") :] if k.startswith("test/") else k): v for k, v in metrics.items()}
    record = ResultRecord(
        method=method,
        table=table,
        row=row,
        seed=seed,
        metrics=metrics,
        dataset=dataset,
        backbone=backbone,
        published=published if published is not None else published_for_row(method, row),
        command=command if command is not None else " ".join(["python", *sys.argv]),
        git_commit=commit,
        git_dirty=dirty,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        hardware=hardware(),
        wall_time_s=wall_time_s,
        wandb_run_id=wandb_run_id,
        run_dir=None if run_dir is None else str(run_dir),
        protocol={str(k): str(v) for k, v in (protocol or {}).items()},
    )
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
    target = record_path(records_dir if records_dir is not None else default_records_dir(), method, table, row, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "record.json").write_text(text)
    return record


def load_records(records_dir: str | Path) -> list[ResultRecord]:
    """Every ``*.json`` record under ``records_dir`` (sorted by path). A file that is not a valid record raises a
    ValueError that names it."""
    out = []
    for path in sorted(Path(records_dir).rglob("*.json")):
        try:
            out.append(ResultRecord.from_dict(json.loads(path.read_text())))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path} is not a valid result record: {e}") from e
    return out


def write_demo_record(
    method: str, row: str, seed: int | None, metrics: dict[str, float], **kwargs: Any
) -> ResultRecord:
    """The record of one demo run (table ``demo``): what ``make demo`` and the per-method demos call, so that their
    numbers reach ``make tables`` and ``make report`` the same way as the paper-table runs. ``kwargs`` go to
    :func:`write_record` (``records_dir``, ``run_dir``, ``dataset``, ``backbone``, ``wall_time_s`` ...)."""
    return write_record(method=method, table="demo", row=row, seed=seed, metrics=metrics, **kwargs)
