"""`make wandb-sync` finds the offline runs, skips synced ones, and fails when wandb fails."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from common.utils.wandb_sync import main, offline_runs

ROOT = Path(__file__).resolve().parents[2]


def _fake_wandb(tmp_path: Path, code: int) -> Path:
    """An executable that records its arguments and exits with ``code``."""
    exe = tmp_path / "bin" / "wandb"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args.txt"\nexit {code}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def _runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    logs = tmp_path / "logs"
    a = logs / "train/runs/r1/wandb/offline-run-20261201_000000-aaaa"
    b = logs / "eval/runs/r2/wandb/offline-run-20261201_000001-bbbb"
    done = logs / "train/runs/r3/wandb/offline-run-20261201_000002-cccc"
    for run in (a, b, done):
        run.mkdir(parents=True)
        (run / f"run-{run.name[-4:]}.wandb").write_bytes(b"x")
    (done / "run-cccc.wandb.synced").write_text("")
    return logs, a, b


def test_finds_unsynced_runs_only(tmp_path: Path) -> None:
    logs, a, b = _runs(tmp_path)
    assert offline_runs([logs]) == sorted([a, b])
    assert len(offline_runs([logs], include_synced=True)) == 3


def test_failed_upload_fails_the_command(tmp_path: Path, capsys) -> None:
    logs, a, b = _runs(tmp_path)
    assert main([str(logs), "--wandb", str(_fake_wandb(tmp_path, 1))]) == 1
    assert "wandb login" in capsys.readouterr().err
    assert (tmp_path / "args.txt").read_text().split() == ["sync", *map(str, sorted([a, b]))]


def test_successful_upload_and_nothing_to_do(tmp_path: Path, capsys) -> None:
    logs, _, _ = _runs(tmp_path)
    assert main([str(logs), "--wandb", str(_fake_wandb(tmp_path, 0))]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 0
    assert "no unsynced offline runs" in capsys.readouterr().out
    assert main([str(tmp_path / "absent")]) == 2


def test_make_target_calls_the_module() -> None:
    dry = subprocess.run(["make", "-n", "wandb-sync"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m common.utils.wandb_sync logs" in dry
    assert "--sync-all" not in dry
