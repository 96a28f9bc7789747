"""End to end: ``python -m gallop.demo`` runs the three scene-study rows through the launcher (here with a 1-step
small CLIP on tiny Fashion-MNIST files) and writes what `make demo` and `make report` read, and offline wandb runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.demo import headline
from gallop import demo, tiny_clip
from tests.conftest import make_tiny_fashion_mnist
from tests.gallop.test_scene_study import TINY
from tests.helpers.wandb_offline import read_offline_run


@pytest.mark.slow
def test_demo_runs_the_rows_and_writes_artifacts(tmp_path: Path, monkeypatch) -> None:
    root = make_tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist", per_class=6)
    clip_dir = tmp_path / "clip"
    tiny_clip.train(clip_dir, root, steps=1, batch_size=8, val_items=8, threads=1, warmup=1, log=lambda s: None)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--seeds", "1,2", f"scenes.clip_dir={clip_dir}", *TINY]) == 0
    # one result record per (method, seed), table demo; zero-shot CLIP is seed-free and runs once
    names = sorted(p.name for p in (out / "records" / "gallop" / "demo").glob("*.json"))
    assert names == sorted(["zeroshot_clip-s1.json"] + [f"{r}-s{s}.json" for r in ("coop", "gallop") for s in (1, 2)])
    saved = json.loads((out / "gallop.json").read_text())
    assert saved["study"] == "gallop_scenes" and saved["seeds"] == [1, 2]
    assert saved["runs"]["zero-shot CLIP"]["1"] == saved["runs"]["zero-shot CLIP"]["2"]
    assert saved["setting"]["shots"] == 2 and saved["setting"]["lr"] == {"CoOp": 0.05, "GalLoP": 0.2}
    assert saved["clip"]["sha256"] == tiny_clip.sha256(clip_dir / tiny_clip.WEIGHTS_NAME)
    assert saved["command"].startswith("python -m common.launch -m experiment=gallop/demo_scenes_zeroshot seed=1")
    md = (out / "gallop.md").read_text()
    assert "| GalLoP local-only |" in md and "GL-MCM beats MCM" in md
    assert (out / "gallop_heatmaps.png").stat().st_size > 1000 and saved["heatmaps"] == "gallop_heatmaps.png"
    for name in ("coop", "gallop"):  # the report's training curves: one row per optimisation step (25 epochs of 1)
        rows = (out / "artifacts" / f"gallop_curve_{name}.csv").read_text().split()
        assert rows[0] == "step,loss" and len(rows) == 26
    # the demo's headline row: GalLoP's mean ± std and the three verdicts
    row = headline(out).splitlines()[-1]
    assert row.startswith("| Prompts | top-1 % | GalLoP ") and "GalLoP global-only" in row
    assert row.count("hold") == 3 and "2 seeds" in row
    # the runs logged to wandb offline: group gallop/demo, named <row>-s<seed>, training runs
    rec = json.loads((out / "records" / "gallop" / "demo" / "gallop-s2.json").read_text())
    (folder,) = (out / "runs" / "gallop").rglob(f"offline-run-*-{rec['wandb_run_id']}")
    for _ in range(20):  # wandb-core may still be flushing the record log
        logged = read_offline_run(folder)
        if logged["run"] and logged["config"]:
            break
        time.sleep(0.5)
    assert (logged["run"]["group"], logged["run"]["job_type"], logged["run"]["name"]) == (
        "gallop/demo",
        "train",
        "gallop-s2",
    )
    config = logged["config"]
    assert (config["method"], config["table"], config["row"]) == ("gallop", "demo", "gallop")
    assert (config["dataset"], config["backbone"]) == ("fashion-mnist-scenes", "tiny_clip_fmnist")
