"""End to end: without real CLIP weights the GalLoP demo runs the cluttered-scene study on the repo's small CLIP
(here a 1-step one trained on tiny Fashion-MNIST files) and writes what `make demo` and `make report` read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from common.demo import headline
from gallop import demo, tiny_clip


def test_demo_without_weights_runs_the_scene_study_and_writes_artifacts(tmp_path: Path) -> None:
    from tests.conftest import make_tiny_fashion_mnist

    root = make_tiny_fashion_mnist(tmp_path / "fmnist", per_class=6)
    clip_dir = tmp_path / "clip"
    tiny_clip.train(clip_dir, root, steps=1, batch_size=8, val_items=8, threads=1, warmup=1, log=lambda s: None)
    out = tmp_path / "out"
    argv = ["--data-root", str(root), "--out", str(out), "--weights-dir", str(tmp_path / "no_weights")]
    argv += ["--clip-dir", str(clip_dir), "--seeds", "1,2", "--threads", "1"]
    sets = ["epochs=1", "shots=2", "test_per_class=2", "ood_per_class=2", "train_pool_per_class=4"]
    root_level = logging.getLogger().level
    assert demo.main([*argv, "--set", *sets]) == 0
    assert logging.getLogger().level == root_level  # the demo's quiet() restores the caller's logging
    # one result record per (method, seed), table demo, like the other demos
    names = sorted(p.name for p in (out / "records" / "gallop" / "demo").glob("*.json"))
    assert names == sorted(f"{row}-s{seed}.json" for row in ("zeroshot_clip", "coop", "gallop") for seed in (1, 2))
    saved = json.loads((out / "gallop.json").read_text())
    assert saved["real_weights"] is False and saved["study"] == "gallop_scenes" and saved["seeds"] == [1, 2]
    assert set(saved["runs"]) == {"zero-shot CLIP", "CoOp", "GalLoP"}
    assert saved["command"].startswith("python -m gallop.demo ")
    md = (out / "gallop.md").read_text()
    assert "mean nothing" not in md and "RANDOM" not in md and "GL-MCM beats MCM" in md
    assert (out / "gallop_heatmaps.png").stat().st_size > 1000 and saved["heatmaps"] == "gallop_heatmaps.png"
    for name in ("coop", "gallop"):  # the report's training curves: one row per optimisation step
        rows = (out / "artifacts" / f"gallop_curve_{name}.csv").read_text().split()
        assert rows[0] == "step,loss" and len(rows) > 1
    # the demo's headline row: GalLoP's mean ± std and the three verdicts
    row = headline(out).splitlines()[-1]
    assert row.startswith("| Prompts | top-1 % | GalLoP ") and "GalLoP global-only" in row
    assert row.count("hold") == 3 and "2 seeds" in row and "mean nothing" not in row
