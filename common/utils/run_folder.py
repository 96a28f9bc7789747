"""Run folders: unique names, one run per folder, resuming in the same folder, ``ckpt_path=last``.

- **Names.** ``hydra.run.dir`` is ``${run_dir:<parent>}`` (configs/hydra/default.yaml): ``<parent>/<date>_<time>.<ms>_<pid>``,
  unique per process even for runs started in the same second. Inside a SLURM job (the job runs the launcher through
  ``srun`` or submitit) it is ``<parent>/slurm-<job id>``: every task of the job (DDP ranks) and the requeued job
  after a preemption find the same folder; a second launch within the same job gets ``slurm-<job id>-2``.
- **One run per folder** (:func:`claim_run_folder`, called before Hydra writes into the folder and again by
  :func:`common.launch.run`). A folder that holds a run is never mixed with another one: a *running* or
  *interrupted* run there stops the launch with a message saying how to resume it; a *completed* or *failed* one is
  moved aside to ``<folder>.old-<time>`` first (so the fixed folders of ``make`` targets can be run again and the
  previous results stay on disk); other files in it are left alone (with a warning). It is shared only with a run
  that continues it: ``ckpt_path`` pointing inside the folder (a resume), the same SLURM job (a requeue, or another rank).
- **Resume in place** (:func:`continuation_dir`): ``ckpt_path=<run>/checkpoints/last.ckpt`` with ``train=true``
  continues in ``<run>`` when it is a run of the same experiment; Hydra's records of the new attempt go to
  ``<run>/.hydra/resume_<n>/``.
- ``ckpt_path=last`` (:func:`resolve_last_checkpoint`): the newest checkpoint of the newest run of the same
  experiment under ``<log_dir>/<task_name>``, or an error that lists the runs found.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from common.utils.runs import (
    STATUS_FILE,
    list_runs,
    newest_checkpoint,
    now_iso,
    owner_alive,
    read_run,
    read_status,
    write_status,
)

log = logging.getLogger(__name__)

LAUNCH = "python -m common.launch"
_RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK")


class RunFolderError(RuntimeError):
    """The run folder holds another run (or something that is not a run)."""


# ---------------------------------------------------------------------------------------------- who is running
def slurm_job() -> str | None:
    """``[<cluster>:]<job id>`` (``<array job>_<task>`` for array jobs) of a SLURM-launched process, else None.

    Interactive allocations (job name ``bash`` or ``interactive``, as Lightning's SLURM detection) do not count: runs
    started by hand there get ordinary unique folders.
    """
    env = os.environ
    if "SLURM_JOB_ID" not in env or "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    job = env["SLURM_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    cluster = env.get("SLURM_CLUSTER_NAME")
    return f"{cluster}:{job}" if cluster else job


def is_follower_rank() -> bool:
    """True in the non-zero ranks of a distributed run: they use the folder that rank 0 claims and write no status."""
    for var in _RANK_VARS:
        try:
            if int(os.environ.get(var, "0")) != 0:
                return True
        except ValueError:
            continue
    return False


def attempt_record(ckpt_path: str | None, command: str | None) -> dict[str, Any]:
    return {
        "started": now_iso(),
        "ended": None,
        "status": "running",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": slurm_job(),
        "ckpt_path": ckpt_path,
        "command": command,
    }


# ---------------------------------------------------------------------------------------------- names
def new_run_dir(parent: str | Path) -> str:
    """A fresh run folder under ``parent`` (the ``${run_dir:...}`` resolver); see the module docstring."""
    parent = Path(str(parent))
    job = slurm_job()
    if job is None:
        t = datetime.now()
        return str(parent / f"{t:%Y-%m-%d_%H-%M-%S}.{t.microsecond // 1000:03d}_{os.getpid()}")
    base = "slurm-" + re.sub(r"[^\w.-]", "-", job)
    for n in itertools.count(1):
        path = parent / (base if n == 1 else f"{base}-{n}")
        if not path.exists():
            return str(path)
        rec = read_status(path)
        if rec is None:
            if is_follower_rank():  # rank 0 of this job created it a moment ago
                return str(path)
            continue
        last = (rec.get("attempts") or [{}])[-1]
        if last.get("slurm_job") == job and rec.get("status") in ("running", "interrupted"):
            return str(path)  # another rank of this job, or this job requeued
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- claims
def _is_inside(path: str | Path | None, folder: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _hydra_only(folder: Path) -> bool:
    """Only what Hydra writes before the job starts (``.hydra/`` and the job log), or nothing."""
    return all(p.name == ".hydra" or p.suffix == ".log" for p in folder.iterdir())


def _archive(folder: Path, why: str) -> Path:
    stamp = datetime.fromtimestamp(folder.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
    target = folder.with_name(f"{folder.name}.old-{stamp}")
    for n in itertools.count(2):
        if not target.exists():
            break
        target = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    folder.rename(target)
    log.warning("%s already held a %s; moved it to %s", folder, why, target)
    return target


def claim_run_folder(
    run_dir: str | Path,
    *,
    experiment: str | None,
    task_name: str | None,
    ckpt_path: str | None = None,
    command: str | None = None,
) -> str:
    """Make ``run_dir`` this process's run folder and mark it ``running``.

    Returns how the folder is used: ``"new"``, ``"resume"`` (``ckpt_path`` lies inside it: the run continues),
    ``"requeue"`` (the same SLURM job started again) or ``"follower"`` (a non-zero rank: nothing is written). A
    second claim by the same process returns the first one's answer. Raises :class:`RunFolderError` when the folder holds a run that must not
    be touched (see the module docstring).
    """
    run_dir = Path(run_dir)
    if is_follower_rank():
        return "follower"
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = read_status(run_dir)
    mode = "new"
    if rec is not None:
        attempts = rec.get("attempts") or [{}]
        last = attempts[-1]
        alive = owner_alive(last)
        status = rec.get("status")
        if status == "running" and alive is False:
            status = "failed"  # its process is gone
        job = slurm_job()
        if last.get("pid") == os.getpid() and last.get("host") == socket.gethostname() and last.get("ended") is None:
            return str(last.get("mode", "new"))  # claimed already by this process (the Hydra callback)
        if job is not None and last.get("slurm_job") == job and status in ("running", "interrupted"):
            mode = "requeue"
        elif _is_inside(ckpt_path, run_dir):
            if rec.get("experiment") != experiment:
                raise RunFolderError(
                    f"{run_dir} holds a run of experiment {rec.get('experiment')!r}, not {experiment!r}: a checkpoint "
                    f"of it can be loaded into a new run folder (leave hydra.run.dir alone), not continued here."
                )
            if status == "running" and alive:
                raise RunFolderError(
                    f"{run_dir} is in use: its run is still running (pid {last.get('pid')} on {last.get('host')}). "
                    f"Stop it first (Ctrl+C saves a checkpoint), then resume."
                )
            if status == "running":
                log.warning("%s is marked running on %s; resuming it anyway", run_dir, last.get("host"))
            mode = "resume"
        elif status in ("completed", "failed"):
            _archive(run_dir, f"{status} run")
            run_dir.mkdir(parents=True)
        else:
            hint = rec.get("resume_command") or f"{LAUNCH} ... ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
            state = f"running (pid {last.get('pid')} on {last.get('host')})" if status == "running" else status
            raise RunFolderError(
                f"{run_dir} already holds a run ({state}, experiment {rec.get('experiment')!r}, started "
                f"{rec.get('started')}). Resume it with:\n  {hint}\nor start a new run in another folder (leave "
                f"hydra.run.dir to its default, or give a new one)."
            )
    elif read_run(run_dir) is not None or (run_dir / "checkpoints").exists():  # written by an older launcher
        if _is_inside(ckpt_path, run_dir):
            mode = "resume"
        else:
            _archive(run_dir, "run (no status.json)")
            run_dir.mkdir(parents=True)
    elif not _hydra_only(run_dir):
        log.warning("the run folder %s already holds other files (not a run); writing the run beside them", run_dir)

    attempt = {**attempt_record(ckpt_path, command), "mode": mode}
    if mode == "new":
        record = {
            "status": "running",
            "experiment": experiment,
            "task_name": task_name,
            "started": attempt["started"],
            "ended": None,
            "command": command,
            "error": None,
            "signal": None,
            "checkpoint": None,
            "resume_command": None,
            "undefined_metrics": [],
            "attempts": [attempt],
        }
        try:  # exclusive create: of two processes claiming the same new folder, one fails here
            fd = os.open(run_dir / STATUS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise RunFolderError(f"{run_dir} was claimed by another run at the same moment") from None
        os.close(fd)
        write_status(run_dir, record)
    else:
        record = dict(rec or {"experiment": experiment, "task_name": task_name, "started": attempt["started"]})
        prior = record.get("attempts") or []
        if prior and prior[-1].get("ended") is None:  # killed without an end: record what we know
            prior[-1] = {
                **prior[-1],
                "ended": attempt["started"],
                "status": "failed" if mode != "requeue" else "interrupted",
            }
        record.update(
            status="running",
            ended=None,
            command=command,
            error=None,
            signal=None,
            resume_command=None,
            attempts=[*prior, attempt],
        )
        write_status(run_dir, record)
        log.info("continuing the run in %s (%s, attempt %d)", run_dir, mode, len(record["attempts"]))
    return mode


def release_run_folder(run_dir: str | Path, error: str | None = None) -> bool:
    """Undo this process's claim for a run that never started (a config error): True if the folder was removed.

    A folder holding nothing but Hydra's records and this process's fresh claim is removed; a folder that holds an
    earlier run (a resume) keeps it, and this attempt is recorded as failed with ``error``.
    """
    run_dir = Path(run_dir)
    if is_follower_rank() or not run_dir.is_dir():
        return False
    rec = read_status(run_dir)
    attempts = (rec or {}).get("attempts") or []
    mine = bool(attempts) and attempts[-1].get("pid") == os.getpid() and attempts[-1].get("ended") is None
    rest = [p for p in run_dir.iterdir() if p.name != STATUS_FILE]
    if (rec is None or (mine and len(attempts) == 1)) and all(p.name == ".hydra" or p.suffix == ".log" for p in rest):
        shutil.rmtree(run_dir)
        return True
    if rec is not None and mine:
        ended = now_iso()
        attempts[-1] = {**attempts[-1], "ended": ended, "status": "failed"}
        previous = attempts[-2]["status"] if len(attempts) > 1 else "failed"
        rec.update(status=previous, ended=ended, attempts=attempts)
        if error:
            attempts[-1]["error"] = error
        write_status(run_dir, rec)
    return False


# ---------------------------------------------------------------------------------------------- resuming
def continuation_dir(ckpt_path: str | Path, experiment: str | None) -> Path | None:
    """The run folder that a resume from ``ckpt_path`` continues: the checkpoint's own run folder when it is a run of
    ``experiment`` (``<run>/checkpoints/x.ckpt`` or ``<run>/hpc_ckpt_<n>.ckpt``), else None."""
    ckpt = Path(ckpt_path).resolve()
    for folder in (ckpt.parent, ckpt.parent.parent):
        run = read_run(folder)
        if run is not None:
            return folder if run.experiment == experiment else None
    return None


def next_resume_subdir(run_dir: Path) -> str:
    n = 1 + sum(1 for _ in (run_dir / ".hydra").glob("resume_*"))
    return f".hydra/resume_{n}"


def resolve_last_checkpoint(runs_root: str | Path, experiment: str | None) -> Path:
    """``ckpt_path=last``: the newest checkpoint of the newest run of ``experiment`` under ``runs_root`` that is not
    running. Raises ``FileNotFoundError`` listing the runs of the experiment when none has a checkpoint."""
    runs_root = Path(runs_root)
    runs = list_runs(runs_root, experiment=experiment)
    for run in runs:
        ckpt = run.checkpoint
        if ckpt is not None and run.status != "running":
            log.info("ckpt_path=last -> %s (run %s, %s, started %s)", ckpt, run.path, run.status, run.started)
            return ckpt
    if runs:
        listed = "\n".join(
            f"  {r.path}  {r.status}  {'checkpoint ' + str(r.checkpoint) if r.checkpoint else 'no checkpoint'}"
            for r in runs
        )
        found = f"Runs of this experiment:\n{listed}"
    else:
        found = "No run of this experiment was found there."
    raise FileNotFoundError(
        f"ckpt_path=last: no run of experiment {experiment!r} under {runs_root} has a checkpoint to resume from "
        f"(a running run is not a candidate). {found}\nPass ckpt_path=<path to a .ckpt> instead."
    )


def hydra_quote(value: str) -> str:
    """``value`` as a Hydra override value (quoted when it holds characters Hydra's grammar would interpret)."""
    if re.fullmatch(r"[\w./@:+\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch_command(overrides: list[str], ckpt_path: str | Path | None = None) -> str:
    """The shell command that runs ``common.launch`` with ``overrides``; ``ckpt_path`` replaces any given one."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "ckpt_path"]
    if ckpt_path is not None:
        kept.append(f"ckpt_path={hydra_quote(str(ckpt_path))}")
    return " ".join([LAUNCH, *(shlex.quote(o) for o in kept)])


def resume_hint(run_dir: Path, overrides: list[str], saved: Path | None = None) -> tuple[str, Path | None]:
    """``(message, checkpoint)``: how to resume the run of ``run_dir`` (from ``saved`` or its newest checkpoint)."""
    ckpt = saved or newest_checkpoint(run_dir)
    if ckpt is None:
        return f"No checkpoint was written; start it again with:\n  {launch_command(overrides)}", None
    ckpt = ckpt.resolve()
    return (
        f"Resume it (it continues in {run_dir}) with:\n  {launch_command(overrides, ckpt)}",
        ckpt,
    )


# ---------------------------------------------------------------------------------------------- Hydra callback
def task_overrides() -> list[str]:
    """The overrides of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


def _claim_from_config(config: Any, run_dir: str | Path) -> str:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # for ${hydra:...} in experiment_name
    train = bool(config.get("train", True))
    return claim_run_folder(
        run_dir,
        experiment=config.get("experiment_name"),
        task_name=config.get("task_name"),
        ckpt_path=config.get("ckpt_path") if train else None,
        command=launch_command(task_overrides()),
    )


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class RunFolderCallback(_HydraCallback):
    """Hydra callback (``hydra.callbacks`` in configs/hydra/default.yaml): claims the run folder before Hydra writes
    its ``.hydra/`` records there, so a folder holding another run is refused (or moved aside) untouched."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _claim_from_config(config, str(config.hydra.run.dir))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if is_follower_rank() or not sweep.is_dir() or not any(sweep.iterdir()):
            return
        runs = list_runs(sweep)
        busy = [r for r in runs if r.status in ("running", "interrupted")]
        if busy:
            raise RunFolderError(
                f"the multirun folder {sweep} holds {busy[0].status} runs ({busy[0].path}); resume them one by one "
                f"or give another hydra.sweep.dir"
            )
        if not runs and not (sweep / "multirun.yaml").exists():
            raise RunFolderError(f"{sweep} is not empty and is not a multirun folder; give another hydra.sweep.dir")
        _archive(sweep, "multirun")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:
            _claim_from_config(config, str(config.hydra.runtime.output_dir))
