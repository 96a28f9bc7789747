"""Run folders and their status: what ``common.launch`` records in every run folder, and how to list runs.

Every run folder holds ``status.json`` (written atomically by the launcher, on global rank 0)::

    {
      "status": "completed",              # running | completed | failed | interrupted
      "experiment": "demo/fmnist_contrastive",
      "task_name": "demo",
      "started": "2025-06-01T14:03:22+02:00",   # first attempt
      "ended": "2025-06-01T14:09:51+02:00",     # null while running
      "command": "python -m common.launch experiment=demo/fmnist_contrastive seed=1",
      "error": null,                      # failed: "<ExceptionType>: <message>"
      "signal": null,                     # interrupted: "SIGTERM" or "SIGINT"
      "checkpoint": "checkpoints/last.ckpt",   # newest checkpoint of the folder when the attempt ended
      "resume_command": null,             # interrupted/failed with a checkpoint: the exact command that resumes it
      "undefined_metrics": [],            # metrics written as null in metrics.json (NaN/inf)
      "attempts": [{"started", "ended", "status", "host", "pid", "slurm_job", "ckpt_path", "command"}]
    }

A resumed run (``ckpt_path=<run>/checkpoints/...``) or a requeued SLURM job continues in the same folder and appends
an attempt. Folders written before ``status.json`` existed are read as ``completed`` when they hold ``metrics.json``
and as ``failed`` otherwise; a ``running`` run whose process is gone from this machine reads as ``failed``.

Collectors use :func:`list_runs` (or :func:`read_run` on one folder) and skip what is not ``completed``, saying so::

    for run in list_runs("logs", experiment="roadmap/sop_resnet50"):
        if run.status != "completed":
            print(f"skipped {run.path} ({run.status}: {run.reason})")
            continue
        metrics = run.metrics()

``python -m common.utils.runs [logs]`` prints the same table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "STATUSES",
    "STATUS_FILE",
    "RunInfo",
    "list_runs",
    "newest_checkpoint",
    "read_run",
    "read_status",
    "write_metrics",
    "write_status",
]

STATUS_FILE = "status.json"
STATUSES = ("running", "completed", "failed", "interrupted")
# files that mark a folder as a run written before status.json existed
_LEGACY_MARKERS = ("metrics.json", "config_resolved.yaml")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``status.json`` of ``run_dir``, or None when there is none (or it is unreadable)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Write ``status.json`` atomically (a reader never sees half a file)."""
    path = Path(run_dir) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_metrics(path: str | Path, metrics: dict[str, float]) -> list[str]:
    """Write ``metrics.json`` as strict JSON: an undefined value (NaN, +-inf) becomes ``null``. Returns the names of
    the undefined metrics (sorted)."""
    clean: dict[str, float | None] = {}
    undefined = []
    for key in sorted(metrics):
        value = float(metrics[key])
        if math.isfinite(value):
            clean[key] = value
        else:
            clean[key] = None
            undefined.append(key)
    Path(path).write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    return undefined


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_alive(attempt: dict[str, Any]) -> bool | None:
    """Whether the process of ``attempt`` still runs: True/False on this host, None when it ran on another one."""
    if attempt.get("host") != socket.gethostname() or not isinstance(attempt.get("pid"), int):
        return None
    return pid_alive(attempt["pid"])


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` of a run folder (``checkpoints/`` and SLURM's ``hpc_ckpt_<n>.ckpt``)."""
    run_dir = Path(run_dir)
    files = [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    files = [f for f in files if f.is_file()]
    return max(files, key=lambda f: (f.stat().st_mtime, f.name == "last.ckpt")) if files else None


@dataclass(frozen=True)
class RunInfo:
    """One run folder as collectors see it.

    ``status`` is one of :data:`STATUSES`; ``reason`` says why a run is not ``completed`` (the error, the signal, a
    vanished process, a missing status file) and is empty otherwise.
    """

    path: Path
    status: str
    experiment: str | None
    started: str | None
    reason: str = ""

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def metrics(self) -> dict[str, float | None] | None:
        """``metrics.json`` (undefined values are ``None``), or None when the run wrote none."""
        try:
            return json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def checkpoint(self) -> Path | None:
        return newest_checkpoint(self.path)


def _legacy_experiment(run_dir: Path) -> str | None:
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        path = run_dir / name
        if path.exists():
            for line in path.read_text(errors="ignore").splitlines():
                if line.startswith("experiment_name:"):
                    value = line.split(":", 1)[1].strip().strip("'\"")
                    return None if value in ("", "null") else value
    return None


def read_run(run_dir: str | Path) -> RunInfo | None:
    """The :class:`RunInfo` of one folder, or None when it is not a run folder."""
    run_dir = Path(run_dir)
    rec = read_status(run_dir)
    if rec is None:
        if not any((run_dir / m).exists() for m in _LEGACY_MARKERS):
            return None
        done = (run_dir / "metrics.json").exists()
        reason = "" if done else "no status.json (written by an older launcher) and no metrics.json"
        started = datetime.fromtimestamp(run_dir.stat().st_mtime).astimezone().isoformat(timespec="seconds")
        return RunInfo(run_dir, "completed" if done else "failed", _legacy_experiment(run_dir), started, reason)
    status = rec.get("status") if rec.get("status") in STATUSES else "failed"
    reason = rec.get("error") or (f"stopped by {rec['signal']}" if rec.get("signal") else "")
    attempts = rec.get("attempts") or [{}]
    if status == "running" and owner_alive(attempts[-1]) is False:
        last = attempts[-1]
        status = "failed"
        reason = f"process {last.get('pid')} on {last.get('host')} is gone without recording an end (killed?)"
    return RunInfo(run_dir, status, rec.get("experiment"), rec.get("started"), reason)


def _run_dirs(root: Path) -> Iterator[Path]:
    seen: set[Path] = set()
    for marker in (STATUS_FILE, *_LEGACY_MARKERS):
        for f in root.rglob(marker):
            if f.parent not in seen and ".hydra" not in f.parts:
                seen.add(f.parent)
                yield f.parent


def list_runs(root: str | Path = "logs", experiment: str | None = None, status: str | None = None) -> list[RunInfo]:
    """Every run folder under ``root`` (any depth), newest first; optionally only one experiment and/or status."""
    root = Path(root)
    runs = [r for r in (read_run(d) for d in _run_dirs(root)) if r is not None] if root.exists() else []
    if experiment is not None:
        runs = [r for r in runs if r.experiment == experiment]
    if status is not None:
        runs = [r for r in runs if r.status == status]
    return sorted(runs, key=lambda r: (r.started or "", str(r.path)), reverse=True)


def format_runs(runs: list[RunInfo], root: Path | None = None) -> str:
    lines = []
    for r in runs:
        where = os.path.relpath(r.path, root) if root else str(r.path)
        tail = f"  ({r.reason})" if r.reason else ""
        lines.append(f"{r.status:<11} {r.started or '?':<25} {r.experiment or '-':<40} {where}{tail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="List run folders and their status (newest first).")
    parser.add_argument("root", nargs="?", default="logs")
    parser.add_argument("--experiment", default=None)
    parser.add_argument("--status", default=None, choices=STATUSES)
    args = parser.parse_args(argv)
    runs = list_runs(args.root, args.experiment, args.status)
    print(format_runs(runs, Path(args.root)) if runs else f"no runs under {args.root}")


if __name__ == "__main__":
    main()
