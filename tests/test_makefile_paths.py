"""Make recipes pass user paths (DATA_DIR, WEIGHTS_DIR, *_RUNS) as single arguments, spaces included.

Before, `make ... DATA_DIR="a dir with spaces"` split the path into words: `a/`, `dir/`, ... appeared in the repo root
and the Python entry points got the wrong arguments. The test runs the real recipes with a stand-in interpreter
(``VENV`` points at a folder whose ``bin/python`` only records its arguments and environment), so the shell quoting
is exercised for real while nothing is trained.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytest.fixture
def setup(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.jsonl"
    recorder = venv / "bin" / "python"
    recorder.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    env = {k: os.environ.get(k) for k in ('DATA_DIR', 'WEIGHTS_DIR')}\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], **env}) + '\\n')\n"
    )
    recorder.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: `install` is up to date, nothing is installed
    os.utime(venv / ".installed", (ROOT.joinpath("pyproject.toml").stat().st_mtime + 10,) * 2)
    spaced = tmp_path / "my data dir"
    dirs = {
        "DATA_DIR": spaced / "datasets here",
        "WEIGHTS_DIR": spaced / "weights here",
        "HAPPIER_RUNS": spaced / "happier runs",
        "HEAT_RUNS": spaced / "heat runs",
        "GALLOP_RUNS": spaced / "gallop runs",
    }
    variables = [f"VENV={venv}", *(f"{k}={v}" for k, v in dirs.items())]
    variables += ["HEAT_DATASETS=cifar10", "HEAT_ROWS=el", "GALLOP_DATASETS=dtd", "GALLOP_SEEDS=1"]
    return venv, log, dirs, variables


def _make(variables, *targets, dry=False):
    before = set(os.listdir(ROOT))
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), *(["-n"] if dry else []), *targets, *variables]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(os.listdir(ROOT)) == before, f"make created {set(os.listdir(ROOT)) - before} in the repo root"
    return out.stdout


def test_recipes_pass_paths_with_spaces_as_one_argument(setup):
    venv, log, d, variables = setup
    _make(
        variables,
        "happier-row-sop_happier",
        "happier-dyml-tests-dyml_vehicle_happier",
        "table-happier-collect",
        "train-heat",
        "table-heat-eval",
        "table-gallop",
        "report",
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    argvs = [c["argv"] for c in calls]
    h, heat, g = d["HAPPIER_RUNS"], d["HEAT_RUNS"], d["GALLOP_RUNS"]
    expected = [
        f"hydra.run.dir={h}/sop_happier",
        f"ckpt_path={h}/dyml_vehicle_happier/checkpoints/last.ckpt",
        f"hydra.run.dir={h}/dyml_vehicle_happier_middle",
        f"hydra.run.dir={h}/dyml_vehicle_happier_coarse",
        f"hydra.sweep.dir={heat}",
        f"heat_eval.heat_checkpoints.HEAT-GMM-std={heat}/cifar10_gmm_std/checkpoints/last.ckpt",
        f"hydra.sweep.dir={g}/shots16",
    ]
    for arg in expected:
        assert any(arg in argv for argv in argvs), f"{arg!r} not passed as one argument; calls: {argvs}"
    for method in ("happier", "heat", "gallop"):  # each table target ends with the one collector
        assert ["-m", "common.results.collect", "--method", method] in argvs, argvs
    # the data and weights folders reach every Python process intact (command-line variables are exported)
    assert all(c["DATA_DIR"] == str(d["DATA_DIR"]) and c["WEIGHTS_DIR"] == str(d["WEIGHTS_DIR"]) for c in calls)


def test_demo_heat_recipe_reads_the_data_dir_from_the_environment(setup):
    """The HEAT demo's configs read Fashion-MNIST under paths.data_dir (``$DATA_DIR``, exported by make as every
    command-line variable), like the other launcher demos: the recipe carries no path of its own."""
    _, _, _, variables = setup
    printed = _make(variables, "demo-heat", dry=True)
    line = next(ln for ln in printed.splitlines() if "-m heat.demo" in ln)
    args = shlex.split(line)
    assert "--data-dir" not in args and args[args.index("--out") + 1] == "outputs/demo"
