"""The GalLoP scene study: its rows' configs, one row through the launcher on tiny IDX files (a 1-step tiny CLIP), and
its table and verdict rule by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.launch import run
from gallop import scene_study, tiny_clip
from gallop.scene_study import _paired, table_rows, verdicts
from tests.conftest import compose_train, make_tiny_fashion_mnist

#: tiny scenes: 2 shots, 2 scenes per class in the test and OOD sets, 4 in the few-shot pool
TINY = ["data.shots=2", "scenes.test_per_class=2", "scenes.ood_per_class=2", "scenes.train_per_class=4"]


def test_paired_verdict_rule():
    v = _paired([3.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert v["holds"] and v["mean_gain"] == pytest.approx(2.0) and v["seeds_agreeing"] == 3
    mixed = _paired([3.0, 0.5, 4.0], [1.0, 1.0, 1.0])  # mean favours it, one seed does not
    assert not mixed["holds"] and mixed["seeds_agreeing"] == 2
    lower = _paired([10.0, 20.0], [30.0, 25.0], higher_is_better=False)  # FPR: lower wins
    assert lower["holds"] and lower["mean_gain"] == pytest.approx(12.5)
    assert not _paired([1.0], [1.0])["holds"]  # a tie is no win


def _metrics(acc, g, loc, mcm_auc, gl_auc=None, diag_local=None):
    m = {"test/acc": acc}
    for name in ("held_out", "held_out_in_id_clutter"):
        ood = f"test/ood/{name}"
        m.update({f"{ood}/mcm/auroc": mcm_auc, f"{ood}/mcm/fpr95_closest": 1 - mcm_auc})
        if gl_auc is not None:
            m.update({f"{ood}/gl_mcm/auroc": gl_auc, f"{ood}/gl_mcm/fpr95_closest": 1 - gl_auc})
    if g is not None:
        m.update({"test/acc_global": g, "test/acc_local": loc})
    if diag_local is not None:
        m["diag/acc_local"] = diag_local
    return m


def test_table_and_verdicts_from_hand_made_runs():
    z = _metrics(40.0, None, None, 0.6, 0.7, diag_local=30.0)
    runs = {
        "zero-shot CLIP": {1: z, 2: z},
        "CoOp": {1: _metrics(50.0, None, None, 0.65), 2: _metrics(54.0, None, None, 0.67)},
        "GalLoP": {1: _metrics(60.0, 55.0, 50.0, 0.7, 0.8), 2: _metrics(52.0, 53.0, 56.0, 0.7, 0.65)},
    }
    rows = table_rows(runs)
    top1 = {r["method"]: r for r in rows if r["kind"] == "top1"}
    ood = {r["method"]: r for r in rows if r["kind"] == "ood"}
    assert list(top1) == [label for _, label, _ in scene_study.ACC_ROWS]
    assert top1["CoOp"]["top1"] == pytest.approx((52.0, 2.0))
    assert top1["zero-shot CLIP, local features only"]["top1"] == pytest.approx((30.0, 0.0))
    assert top1["GalLoP local-only"]["top1"] == pytest.approx((53.0, 3.0))
    assert "held_out/gl_mcm_auroc" not in ood["CoOp"]
    assert ood["GalLoP"]["held_out/gl_mcm_auroc"] == pytest.approx((72.5, 7.5))
    assert ood["GalLoP"]["held_out_in_id_clutter/mcm_fpr95"] == pytest.approx((30.0, 0.0))
    v = verdicts(runs)
    assert list(v["headline"]) == [
        "GalLoP beats CoOp (top-1)",
        "local prompts help in clutter (GalLoP global + local vs its global-only prediction, top-1)",
        "GL-MCM beats MCM (GalLoP, AUROC, every OOD set)",
    ]
    h, d = v["headline"], v["details"]
    assert h["GalLoP beats CoOp (top-1)"]["holds"] is False  # +10 then -2
    assert h["GalLoP beats CoOp (top-1)"]["mean_gain"] == pytest.approx(4.0)
    local = h["local prompts help in clutter (GalLoP global + local vs its global-only prediction, top-1)"]
    assert local["seeds_agreeing"] == 1 and local["mean_gain"] == pytest.approx(2.0)  # +5 then -1
    gl = h["GL-MCM beats MCM (GalLoP, AUROC, every OOD set)"]
    assert gl["parts"]["held_out"]["mean_gain"] == pytest.approx(2.5)  # +10 then -5
    assert gl["holds"] is False and gl["seeds_agreeing"] == 1
    assert d["GL-MCM beats MCM (GalLoP, held_out, FPR95 lower)"]["mean_gain"] == pytest.approx(2.5)
    assert d["GL-MCM beats MCM (zero-shot CLIP, held_out, AUROC; one run)"]["holds"] is True
    assert d["CoOp beats zero-shot CLIP (top-1)"]["mean_gain"] == pytest.approx(12.0)
    assert d["GalLoP local-only beats global-only (top-1)"]["mean_gain"] == pytest.approx(-1.0)  # -5, +3
    # the combined question holds only when every OOD set holds on every seed
    both = {1: _metrics(60.0, 55.0, 50.0, 0.7, 0.8), 2: _metrics(52.0, 50.0, 56.0, 0.7, 0.75)}
    assert verdicts({**runs, "GalLoP": both})["headline"]["GL-MCM beats MCM (GalLoP, AUROC, every OOD set)"]["holds"]
    line = scene_study.verdict_line("GL-MCM beats MCM", gl)
    assert "**does not hold**" in line and "held_out: +2.5 ± 7.5, 1/2" in line


def test_rows_hold_the_study_setting(tmp_path):
    """The demo rows' configs: the budget and the learning rates chosen on the val scenes, one scene stream."""
    cfgs = {
        row: compose_train([f"experiment=gallop/demo_scenes_{row}"], tmp_path) for row in ("zeroshot", "coop", "gallop")
    }
    g, c, z = cfgs["gallop"], cfgs["coop"], cfgs["zeroshot"]
    assert (g.model.optimizer.lr, c.model.optimizer.lr, z.model.optimizer) == (0.2, 0.05, None)
    assert g.trainer.max_epochs == c.trainer.max_epochs == 25 and z.trainer.max_epochs == 0
    assert list(g.model.topk) == [2, 4, 6, 8] and g.model.prompt_dropout == c.model.prompt_dropout == 0.75
    assert g.model.optimizer.weight_decay == c.model.optimizer.weight_decay == 1e-2
    assert (g.data.shots, g.data.train_dataset.per_class, g.data.test_dataset.per_class) == (16, 500, 100)
    assert g.data.train_dataset.transform.min_scale == 0.5 and g.data.test_dataset.split == "test"
    assert (g.row, c.row, z.row, g.table) == ("gallop", "coop", "zeroshot_clip", "demo")
    assert "scene_diagnostics" in g.callbacks and "scene_diagnostics" not in c.callbacks
    # the preprocessing written in the base config is the small CLIP's own
    pre = json.loads((tiny_clip.ASSET_DIR / tiny_clip.CONFIG_NAME).read_text())["preprocess_cfg"]
    assert (g.scenes.image_size, list(g.scenes.mean), list(g.scenes.std)) == (pre["size"], pre["mean"], pre["std"])


def test_load_clip_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    clip = scene_study.load_clip()
    assert torch.equal(torch.random.get_rng_state(), state) and not clip.training
    assert scene_study.caption_templates() == list(tiny_clip.TEMPLATES)


def test_gallop_row_through_the_launcher(tmp_path: Path):
    """The GalLoP row on tiny scenes with a 1-step small CLIP: its diagnostics, heatmaps and result record."""
    root = make_tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist", per_class=6)
    clip_dir = tmp_path / "clip"
    tiny_clip.train(clip_dir, root, steps=1, batch_size=8, val_items=8, threads=1, warmup=1, log=lambda s: None)
    overrides = [f"scenes.clip_dir={clip_dir}", f"paths.data_dir={tmp_path / 'data'}", "logger=csv", *TINY]
    cfg = compose_train(["experiment=gallop/demo_scenes_gallop", "trainer.max_epochs=1", *overrides], tmp_path / "run")
    metrics, _ = run(cfg)
    assert {"test/acc", "test/acc_global", "test/acc_local", "test/ood/held_out_in_id_clutter/gl_mcm/auroc"} <= set(
        metrics
    )
    # the local-only diagnostic recomputes GalLoP's own local-only top-1
    assert metrics["test/diag/acc_local"] == pytest.approx(metrics["test/acc_local"])
    assert 0.0 <= metrics["test/diag/box_hit"] <= 100.0
    assert (tmp_path / "run" / "scenes_heatmaps.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert (record["row"], record["table"], record["seed"]) == ("gallop", "demo", 1)
    assert record["metrics"]["diag/acc_local"] == pytest.approx(metrics["test/diag/acc_local"])
