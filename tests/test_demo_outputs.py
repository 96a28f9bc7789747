"""`make demo` and the demo-* targets write nowhere tracked: their outputs go to a git-ignored folder (outputs/demo), and
the committed reference run (results/reference) is only read."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import demo
from tests.conftest import TINY_DEMO_OVERRIDES, make_tiny_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("demo", "demo-report", "demo-roadmap", "demo-happier", "demo-multilabel", "demo-heat", "demo-gallop")
pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="needs GNU make and a git checkout",
)


def _ignored(path: str) -> bool:
    probe = Path(path) / "probe.json"  # a file the demo would write there
    rc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(probe)]).returncode
    return rc == 0


def _status() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _venv(tmp_path: Path) -> Path:
    """A VENV for make whose python is this interpreter and whose install is up to date (nothing is installed)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (ROOT.joinpath("pyproject.toml").stat().st_mtime + 10,) * 2)
    return venv


def test_every_demo_target_writes_into_an_ignored_folder(tmp_path: Path) -> None:
    printed = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "-n", *TARGETS, f"VENV={_venv(tmp_path)}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MAKEFLAGS": ""},
    ).stdout
    outs = []
    for line in printed.splitlines():
        if " -m " not in line or ".demo" not in line and "report.build" not in line:
            continue
        args = shlex.split(line.split("OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ")[-1])
        for flag in ("--out", "--records"):
            if flag in args:
                outs.append(args[args.index(flag) + 1])
    assert len(outs) >= 7, printed  # demo (2), demo-report (2), the four method demos
    assert all(_ignored(o) for o in outs), [o for o in outs if not _ignored(o)]
    assert _ignored(str(demo.DEFAULT_OUT.relative_to(ROOT)))
    assert not _ignored("results/reference"), "the reference run must stay tracked"


@pytest.mark.slow
def test_demo_targets_leave_git_status_unchanged(tmp_path: Path) -> None:
    """The real demo targets on tiny data, tiny budgets, one seed: `git status` is the same before and after."""
    # 10 images per class: HEAT's KNN baseline (k=50) needs at least 50 training features
    tiny_fmnist = tmp_path / "data"
    make_tiny_fashion_mnist(tiny_fmnist / "fashion-mnist", per_class=10)
    out = "outputs/demo-test-untracked"
    shutil.rmtree(ROOT / out, ignore_errors=True)
    common = [f"VENV={_venv(tmp_path)}", f"DATA_DIR={tiny_fmnist}", f"DEMO_OUT={out}", "DEMO_SEEDS=0"]
    hydra = " ".join([*TINY_DEMO_OVERRIDES, "++callbacks.retrieval_grid.query_idx=[0,7]"])
    runs = {
        "demo-roadmap": TINY_DEMO_OVERRIDES[:-1] + ["data.sampler.m=4"],
        "demo-happier": hydra.split(),
        "demo-heat": ["heat_demo.per_class=8", "trainer.max_epochs=1", "trainer.max_steps=2", "data.batch_size=16"],
        "demo-gallop": [
            "data.shots=2",
            "scenes.test_per_class=2",
            "scenes.ood_per_class=2",
            "scenes.train_per_class=4",
        ],
        "demo-report": [],
    }
    before = _status()
    env = {**os.environ, "MAKEFLAGS": "", "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("RESULTS_RECORDS_DIR", None)  # the demos must not need it to stay out of tracked folders
    try:
        for target, args in runs.items():
            cmd = ["make", "--no-print-directory", "-C", str(ROOT), target, *common, "ARGS=" + shlex.join(args)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            assert res.returncode == 0, (target, res.stdout[-3000:], res.stderr[-3000:])
        assert _status() == before
        records = sorted(
            p.relative_to(ROOT / out / "records").as_posix() for p in (ROOT / out / "records").rglob("*.json")
        )
        assert "roadmap/demo/roadmap_smoothap-s0.json" in records and "happier/demo/happier-s0.json" in records
        assert "heat/demo/heat-s0.json" in records and "gallop/demo/gallop-s1.json" in records
        assert (ROOT / out / "report" / "index.html").is_file()
    finally:
        shutil.rmtree(ROOT / out, ignore_errors=True)
