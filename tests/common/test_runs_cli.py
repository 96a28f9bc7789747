"""The launcher as users run it (real subprocesses, tiny synthetic runs): two runs started together keep both results,
a signalled run exits non-zero and resumes in its own folder with the printed command, and a SLURM job requeued after
USR1 resumes in the same folder to the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from common.utils.runs import list_runs, read_status

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data=synthetic",
    "model.net.backbone.in_chans=3",
    "model.net.embed_dim=16",
    "data.batch_size=16",  # 64 items: 4 batches per epoch
    "trainer.max_epochs=2",
    "logger=csv",
    "~callbacks.rich_progress_bar",
    "+trainer.enable_progress_bar=false",
    "extras.print_config=false",
    "callbacks.model_checkpoint.every_n_epochs=1",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PROJECT_ROOT=str(ROOT), **extra)
    return env


def _launch(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "common.launch", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _signal_at(step: int, signum: int) -> list[str]:
    return [
        "+callbacks.signal._target_=tests.common.signals.SignalAt",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signum={int(signum)}",
    ]


@pytest.mark.slow
def test_two_runs_started_together_keep_both_results(tmp_path):
    logs = tmp_path / "logs"
    procs = [_launch([*TINY, f"paths.log_dir={logs}", f"seed={seed}"]) for seed in (1, 2)]
    results = [_finish(p) for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    runs = list_runs(logs)
    assert len(runs) == 2 and len({r.path for r in runs}) == 2
    for r in runs:
        assert r.status == "completed" and r.metrics() and "test/map@r" in r.metrics()
        seed = yaml.safe_load((r.path / "config_resolved.yaml").read_text())["seed"]
        assert f"seed={seed}" in yaml.safe_load((r.path / ".hydra" / "overrides.yaml").read_text())
        assert (r.path / "checkpoints" / "last.ckpt").exists()
    # an explicit folder that holds a finished run: that run is moved aside, not mixed with the new one
    first = runs[-1].path
    before = json.loads((first / "metrics.json").read_text())
    rc, out = _finish(_launch([*TINY, f"paths.log_dir={logs}", "seed=3", f"hydra.run.dir={first}"]))
    assert rc == 0, out
    old = list(first.parent.glob(f"{first.name}.old-*"))
    assert len(old) == 1 and json.loads((old[0] / "metrics.json").read_text()) == before
    assert "seed=3" in yaml.safe_load((first / ".hydra" / "overrides.yaml").read_text())
    assert "seed=3" not in yaml.safe_load((old[0] / ".hydra" / "overrides.yaml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signalled_run_exits_non_zero_and_resumes_in_its_folder(tmp_path, signum):
    logs = tmp_path / "logs"
    rc, out = _finish(_launch([*TINY, f"paths.log_dir={logs}", *_signal_at(5, signum)]))
    assert rc == 128 + signum, out
    (run,) = list_runs(logs)
    assert run.status == "interrupted"
    assert f"Resume it (it continues in {run.path})" in out
    command = out.split("Resume it", 1)[1].splitlines()[1].strip()
    assert command.startswith("python -m common.launch ") and "ckpt_path=" in command
    args = shlex.split(command)[3:]
    rc, out = _finish(_launch(args))
    assert rc == 0, out
    (resumed,) = list_runs(logs)  # one folder: the history is not split
    status = read_status(resumed.path)
    assert resumed.status == "completed" and [a["status"] for a in status["attempts"]] == ["interrupted", "completed"]
    assert (resumed.path / ".hydra" / "resume_1" / "overrides.yaml").exists()
    assert json.loads((resumed.path / "metrics.json").read_text())["test/map@r"] is not None


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path.name}:\n{_finish(proc)[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run did not reach {path.name} within {timeout} s")
        time.sleep(0.1)


def _wait_at_step_5(marker: Path, rank: int | None = None) -> list[str]:
    """Overrides of a run that stops at the start of training step 5 until a signal arrives (only ``rank`` waits)."""
    wait = [
        "+callbacks.wait._target_=tests.common.signals.WaitForSignalAt",
        "+callbacks.wait.step=5",  # 4 batches per epoch: the second batch of epoch 1
        f"+callbacks.wait.marker={marker}",
    ]
    return wait + ([f"+callbacks.wait.rank={rank}"] if rank is not None else [])


def _resume_the_run_stopped_at_step_5(logs: Path, out: str) -> Path:
    """The run in ``logs`` was marked interrupted by SIGTERM with its checkpoint after step 5; the command it printed
    resumes it to completion in the same folder. Returns that folder."""
    (run,) = list_runs(logs)
    assert run.status == "interrupted" and read_status(run.path)["signal"] == "SIGTERM"
    assert torch.load(run.path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    command = out.split("Resume it", 1)[1].splitlines()[1].strip()
    rc, out = _finish(_launch(shlex.split(command)[3:]))  # the waiting callback waits at step 5 only: not again
    assert rc == 0, out
    (resumed,) = list_runs(logs)
    assert resumed.path == run.path and resumed.status == "completed"
    return resumed.path


def _assert_same_end(run_dir: Path, plain_dir: Path) -> None:
    """Equal test metrics and bit-equal final weights, after 8 steps each."""
    ours, theirs = (
        json.loads((run_dir / "metrics.json").read_text()),
        json.loads((plain_dir / "metrics.json").read_text()),
    )
    tests = sorted(k for k in theirs if k.startswith("test/"))
    assert tests and {k: ours[k] for k in tests} == {k: theirs[k] for k in tests}
    a = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(plain_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key


@pytest.mark.slow
def test_sigterm_from_outside_mid_epoch_resumes_to_the_uninterrupted_metrics(tmp_path):
    """What SLURM does at a time limit: SIGTERM to every process of the job (DataLoader workers included) in the
    middle of an epoch. The run saves a checkpoint and exits 143; the printed command resumes it in its folder, and
    it ends with the weights and test metrics of the same run left alone."""
    args = [*TINY, "data.num_workers=2", "+data.train_dataset.augment_noise=0.3"]
    plain = _launch([*args, f"hydra.run.dir={tmp_path / 'plain'}"])  # the uninterrupted run, at the same time
    marker = tmp_path / "reached_step_5"
    cut = _launch([*args, f"paths.log_dir={tmp_path / 'logs'}", *_wait_at_step_5(marker)], start_new_session=True)
    _wait_for(marker, cut)
    os.killpg(cut.pid, signal.SIGTERM)  # the whole process group, as SLURM signals every process of the job
    rc, out = _finish(cut)
    assert rc == 143, out
    resumed = _resume_the_run_stopped_at_step_5(tmp_path / "logs", out)
    rc, out = _finish(plain)
    assert rc == 0, out
    _assert_same_end(resumed, tmp_path / "plain")


@pytest.mark.slow
def test_sigterm_to_rank_0_of_a_ddp_run_stops_both_ranks_with_one_checkpoint_and_resumes_exactly(tmp_path):
    """`trainer=ddp` as on a cluster (Lightning relaunches the command for rank 1), on CPU with 2 gloo processes.
    SIGTERM reaches rank 0 alone (`kill <pid>` on a workstation) in the middle of epoch 1: both ranks stop after the
    batch in flight with one checkpoint, the run exits 143 and is marked interrupted, and the printed command resumes
    it to the test metrics and weights of the same DDP run left alone."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
    args = [*TINY, *ddp, "data.batch_size=8", "+data.train_dataset.augment_noise=0.3"]  # 4 steps per epoch
    plain = _finish(_launch([*args, f"hydra.run.dir={tmp_path / 'plain'}"]))
    assert plain[0] == 0, plain[1]
    marker = tmp_path / "reached_step_5"
    # rank 1 goes on and waits for rank 0 in the step's all-reduce
    cut = _launch([*args, f"paths.log_dir={tmp_path / 'logs'}", *_wait_at_step_5(marker, rank=0)])
    _wait_for(marker, cut)
    os.kill(cut.pid, signal.SIGTERM)  # rank 0 only
    rc, out = _finish(cut)
    assert rc == 143, out
    _assert_same_end(_resume_the_run_stopped_at_step_5(tmp_path / "logs", out), tmp_path / "plain")


FAKE_SCONTROL = """#!/bin/sh
# stands in for SLURM: records the requeue request, then stops the job with SIGTERM as SLURM does before requeueing
echo "$@" >> "{log}"
kill -TERM $PPID
"""


@pytest.mark.slow
def test_slurm_usr1_requeue_resumes_in_the_same_folder(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(FAKE_SCONTROL.format(log=tmp_path / "scontrol.log"))
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = dict(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="1",
        SLURM_JOB_NAME="train",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    logs = tmp_path / "logs"
    args = [*TINY, f"paths.log_dir={logs}"]
    # SLURM sends USR1 (--signal=USR1@90) while the 6th batch trains: Lightning saves hpc_ckpt_1.ckpt and requeues
    rc, out = _finish(_launch([*args, *_signal_at(5, signal.SIGUSR1)], _env(**slurm)))
    assert rc == 143, out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    folder = logs / "train" / "runs" / "slurm-4242"
    assert (folder / "hpc_ckpt_1.ckpt").exists() and (folder / "checkpoints" / "last.ckpt").exists()
    assert read_status(folder)["status"] == "interrupted"
    # the requeued job runs the same command again
    rc, out = _finish(_launch([*args, *_signal_at(5, signal.SIGUSR1)], _env(SLURM_RESTART_COUNT="1", **slurm)))
    assert rc == 0, out
    status = read_status(folder)
    assert status["status"] == "completed" and [a["status"] for a in status["attempts"]] == ["interrupted", "completed"]
    assert all(a["slurm_job"] == "4242" for a in status["attempts"])
    assert status["attempts"][1]["ckpt_path"] is None  # resumed by the requeue rule, not by a command-line path
    # the same run without interruption, outside SLURM, ends with the same metrics
    rc, out = _finish(_launch([*args, "hydra.run.dir=" + str(tmp_path / "plain")]))
    assert rc == 0, out
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    requeued = json.loads((folder / "metrics.json").read_text())
    tests = sorted(k for k in plain if k.startswith("test/"))
    assert tests and {k: requeued[k] for k in tests} == {k: plain[k] for k in tests}
