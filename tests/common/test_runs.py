"""Run folders: unique names, one run per folder, status records, listing runs, ``ckpt_path=last``, strict
metrics.json. Unit tests on folders written by hand (no training)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from common.utils import run_folder as rf
from common.utils.runs import (
    list_runs,
    newest_checkpoint,
    read_run,
    read_status,
    write_metrics,
    write_status,
)


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch):
    for var in (
        "SLURM_JOB_ID",
        "SLURM_NTASKS",
        "SLURM_JOB_NAME",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_CLUSTER_NAME",
        "SLURM_PROCID",
        "SLURM_RESTART_COUNT",
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
    ):
        monkeypatch.delenv(var, raising=False)


def _fake_run(
    path: Path,
    status: str,
    experiment: str = "demo/x",
    started: str = "2025-01-01T00:00:00+00:00",
    pid: int | None = None,
    ckpt: bool = False,
    metrics: dict | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    attempt = {
        "started": started,
        "ended": None if status == "running" else started,
        "status": status,
        "host": os.uname().nodename,
        "pid": pid if pid is not None else os.getpid(),
        "slurm_job": None,
    }
    write_status(
        path, {"status": status, "experiment": experiment, "task_name": "t", "started": started, "attempts": [attempt]}
    )
    if ckpt:
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------ names
def test_run_dir_names_are_unique_per_process_and_sub_second(tmp_path, monkeypatch):
    a = rf.new_run_dir(tmp_path)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{3}_\d+", Path(a).name)
    monkeypatch.setattr(os, "getpid", lambda: 99999999)  # another process, same millisecond at worst
    b = rf.new_run_dir(tmp_path)
    assert a != b and b.endswith("_99999999")


def test_slurm_run_dir_is_shared_by_requeues_not_by_later_launches(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    first = Path(rf.new_run_dir(tmp_path))
    assert first.name == "slurm-77"
    rf.claim_run_folder(first, experiment="demo/x", task_name="t")
    assert rf.new_run_dir(tmp_path) == str(first)  # another rank of this job / the job requeued: same folder
    rec = read_status(first)
    rec["status"] = "interrupted"
    write_status(first, rec)
    assert rf.new_run_dir(tmp_path) == str(first)
    rec["status"] = "completed"
    write_status(first, rec)
    assert Path(rf.new_run_dir(tmp_path)).name == "slurm-77-2"  # a second launch inside the same job
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # srun --pty bash: ordinary names
    assert not Path(rf.new_run_dir(tmp_path)).name.startswith("slurm")


def test_hydra_config_uses_unique_run_dirs_and_claims_folders(tmp_path):
    from tests.conftest import CONFIG_DIR

    text = (CONFIG_DIR / "hydra" / "default.yaml").read_text()
    assert "${run_dir:${paths.log_dir}/${task_name}/runs}" in text
    assert "common.utils.run_folder.RunFolderCallback" in text


# ------------------------------------------------------------------------------------------------ claims
def test_claim_new_folder_writes_running_status(tmp_path):
    run = tmp_path / "r"
    assert rf.claim_run_folder(run, experiment="demo/x", task_name="t", command="python -m common.launch a=1") == "new"
    rec = read_status(run)
    assert rec["status"] == "running" and rec["experiment"] == "demo/x" and rec["attempts"][0]["pid"] == os.getpid()
    assert rf.claim_run_folder(run, experiment="demo/x", task_name="t") == "new"  # the launcher claims twice


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_claim_refuses_a_folder_holding_a_live_or_interrupted_run(tmp_path, status):
    run = _fake_run(tmp_path / "r", status, pid=os.getppid(), ckpt=True)
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(rf.RunFolderError, match="already holds a run") as e:
        rf.claim_run_folder(run, experiment="demo/x", task_name="t")
    assert "ckpt_path=" in str(e.value)  # says how to resume it
    assert sorted(p.name for p in run.rglob("*")) == before  # untouched


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_claim_moves_a_finished_run_aside(tmp_path, status):
    run = _fake_run(tmp_path / "r", status, pid=_dead_pid(), metrics={"test/map@r": 0.5})
    assert rf.claim_run_folder(run, experiment="demo/x", task_name="t") == "new"
    old = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(old) == 1 and json.loads((old[0] / "metrics.json").read_text()) == {"test/map@r": 0.5}
    assert not (run / "metrics.json").exists() and read_status(run)["status"] == "running"


def test_claim_resumes_with_a_checkpoint_inside(tmp_path):
    run = _fake_run(tmp_path / "r", "interrupted", pid=_dead_pid(), ckpt=True)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    with pytest.raises(rf.RunFolderError, match="experiment"):
        rf.claim_run_folder(run, experiment="other/y", task_name="t", ckpt_path=ckpt)
    assert rf.claim_run_folder(run, experiment="demo/x", task_name="t", ckpt_path=ckpt) == "resume"
    rec = read_status(run)
    assert rec["status"] == "running" and [a["status"] for a in rec["attempts"]] == ["interrupted", "running"]


def test_claim_leaves_other_files_alone(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("mine")
    assert rf.claim_run_folder(tmp_path / "a", experiment=None, task_name="t") == "new"
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine" and "other files" in caplog.text
    (tmp_path / "b" / ".hydra").mkdir(parents=True)
    (tmp_path / "b" / "train.log").write_text("")
    assert rf.claim_run_folder(tmp_path / "b", experiment=None, task_name="t") == "new"


def test_release_removes_only_a_fresh_claim(tmp_path):
    fresh = tmp_path / "fresh"
    rf.claim_run_folder(fresh, experiment=None, task_name="t")
    (fresh / ".hydra").mkdir()
    assert rf.release_run_folder(fresh) and not fresh.exists()
    resumed = _fake_run(tmp_path / "resumed", "interrupted", pid=_dead_pid(), ckpt=True)
    rf.claim_run_folder(resumed, experiment="demo/x", task_name="t", ckpt_path=str(resumed / "checkpoints/last.ckpt"))
    assert not rf.release_run_folder(resumed, error="bad type")
    rec = read_status(resumed)
    assert rec["status"] == "interrupted" and rec["attempts"][-1]["status"] == "failed"


# ------------------------------------------------------------------------------------------------ listing
def test_list_runs_reports_every_status_and_old_folders(tmp_path):
    _fake_run(tmp_path / "a", "completed", started="2025-01-01T00:00:01+00:00", metrics={"m": 1.0})
    _fake_run(tmp_path / "b", "failed", started="2025-01-01T00:00:02+00:00")
    _fake_run(tmp_path / "c", "interrupted", started="2025-01-01T00:00:03+00:00", ckpt=True)
    _fake_run(tmp_path / "d", "running", started="2025-01-01T00:00:04+00:00", pid=_dead_pid())
    _fake_run(tmp_path / "e", "running", started="2025-01-01T00:00:05+00:00", pid=os.getpid())
    (tmp_path / "old1").mkdir()
    (tmp_path / "old1" / "metrics.json").write_text("{}")
    (tmp_path / "old2").mkdir()
    (tmp_path / "old2" / "config_resolved.yaml").write_text("experiment_name: demo/x\n")
    runs = {r.path.name: r for r in list_runs(tmp_path)}
    assert {k: r.status for k, r in runs.items()} == {
        "a": "completed",
        "b": "failed",
        "c": "interrupted",
        "d": "failed",
        "e": "running",
        "old1": "completed",
        "old2": "failed",
    }
    assert "gone" in runs["d"].reason and "no status.json" in runs["old2"].reason
    assert runs["old2"].experiment == "demo/x" and runs["a"].metrics() == {"m": 1.0}
    assert runs["c"].checkpoint == tmp_path / "c" / "checkpoints" / "last.ckpt"
    # newest first (an old folder is dated by its modification time: now)
    assert [r.path.name for r in list_runs(tmp_path, status="failed")] == ["old2", "d", "b"]
    assert read_run(tmp_path / "nothing") is None


def test_runs_cli_prints_the_table(tmp_path, capsys):
    from common.utils.runs import main

    _fake_run(tmp_path / "a", "interrupted")
    main([str(tmp_path)])
    assert "interrupted" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ resuming
def test_ckpt_path_last_picks_the_newest_run_of_the_experiment(tmp_path):
    older = _fake_run(tmp_path / "runs" / "1", "completed", started="2025-01-01T00:00:01+00:00", ckpt=True)
    _fake_run(tmp_path / "runs" / "2", "failed", started="2025-01-01T00:00:02+00:00")  # newer, no checkpoint
    _fake_run(tmp_path / "runs" / "3", "interrupted", experiment="demo/other", started="2025-01-01T00:00:03", ckpt=True)
    _fake_run(
        tmp_path / "runs" / "4", "running", started="2025-01-01T00:00:04+00:00", ckpt=True
    )  # alive: not a candidate
    assert rf.resolve_last_checkpoint(tmp_path, "demo/x") == older / "checkpoints" / "last.ckpt"
    with pytest.raises(FileNotFoundError) as e:
        rf.resolve_last_checkpoint(tmp_path, "demo/none")
    assert "No run of this experiment" in str(e.value)
    _fake_run(tmp_path / "solo" / "1", "failed", experiment="demo/y")
    with pytest.raises(FileNotFoundError) as e:
        rf.resolve_last_checkpoint(tmp_path / "solo", "demo/y")
    assert "no checkpoint" in str(e.value) and str(tmp_path / "solo" / "1") in str(e.value)


def test_continuation_dir_and_resume_command(tmp_path):
    run = _fake_run(tmp_path / "r", "interrupted", ckpt=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert rf.continuation_dir(ckpt, "demo/x") == run.resolve()
    assert rf.continuation_dir(ckpt, "demo/other") is None
    hpc = run / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"y")
    assert rf.continuation_dir(hpc, "demo/x") == run.resolve()
    cmd = rf.launch_command(["experiment=demo/x", "ckpt_path=old", "seed=1"], "/a b/c,d.ckpt")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = shlex.split(cmd)
    assert args[:5] == ["python", "-m", "common.launch", "experiment=demo/x", "seed=1"]  # the old ckpt_path dropped
    parsed = OverridesParser.create().parse_overrides(args[5:])
    assert parsed[0].key_or_group == "ckpt_path" and parsed[0].value() == "/a b/c,d.ckpt"  # the shell and Hydra agree
    assert newest_checkpoint(run) in (ckpt, hpc)


# ------------------------------------------------------------------------------------------------ metrics.json
def test_metrics_json_is_strict_with_nulls(tmp_path):
    path = tmp_path / "metrics.json"
    undefined = write_metrics(path, {"test/map@r": math.nan, "test/recall@1": 0.5, "x": math.inf})
    assert undefined == ["test/map@r", "x"]

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"test/map@r": None, "test/recall@1": 0.5, "x": None}
