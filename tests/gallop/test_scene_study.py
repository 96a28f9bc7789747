"""The GalLoP scene study end to end on tiny IDX files (a 1-step tiny CLIP), and its verdict rule by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gallop import scene_study, tiny_clip
from gallop.scene_study import _paired, table_rows, verdicts
from tests.conftest import make_tiny_fashion_mnist


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


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match="unknown StudyConfig field 'lr'"):
        scene_study._apply_overrides(scene_study.StudyConfig(), ["lr=0.1"])
    cfg = scene_study._apply_overrides(scene_study.StudyConfig(), ["topk=[1, 2]", "lr_gallop=0.05", "epochs=3"])
    assert cfg.topk == (1, 2) and cfg.lr_gallop == 0.05 and cfg.epochs == 3


@pytest.mark.slow
def test_study_runs_every_method_and_writes_table_verdicts_and_heatmaps(tmp_path: Path):
    root = make_tiny_fashion_mnist(tmp_path / "fmnist", per_class=6)
    clip_dir = tmp_path / "clip"
    tiny_clip.train(clip_dir, root, steps=1, batch_size=8, val_items=8, threads=1, warmup=1, log=lambda s: None)
    out = tmp_path / "out"
    sets = ["epochs=1", "shots=2", "test_per_class=2", "ood_per_class=2", "train_pool_per_class=4"]
    argv = ["--data-root", str(root), "--clip-dir", str(clip_dir), "--out", str(out), "--seeds", "1", "2"]
    assert scene_study.main([*argv, "--threads", "1", "--set", *sets]) == 0
    saved = json.loads((out / "scenes.json").read_text())
    assert set(saved["runs"]) == {"zero-shot CLIP", "CoOp", "GalLoP"} and saved["config"]["epochs"] == 1
    assert saved["runs"]["zero-shot CLIP"]["1"] == saved["runs"]["zero-shot CLIP"]["2"]  # seed-free, run once
    g = saved["runs"]["GalLoP"]["1"]
    assert {"test/acc", "test/acc_global", "test/acc_local", "test/ood/held_out/gl_mcm/auroc"} <= set(g)
    assert "test/ood/held_out_in_id_clutter/gl_mcm/auroc" in g
    # the local-only diagnostic recomputes GalLoP's own local-only top-1
    assert g["diag/acc_local"] == pytest.approx(g["test/acc_local"])
    assert 0.0 <= g["diag/box_hit"] <= 100.0 and "diag/acc_local" in saved["runs"]["zero-shot CLIP"]["1"]
    assert saved["clip"]["sha256"] == tiny_clip.sha256(clip_dir / tiny_clip.WEIGHTS_NAME)
    assert len(saved["table"]) == 9 and "GalLoP beats CoOp (top-1)" in saved["verdicts"]["headline"]
    md = (out / "scenes.md").read_text()
    assert "| GalLoP local-only |" in md and "GL-MCM beats MCM" in md and saved["command"] in md
    assert (out / "scenes_heatmaps.png").stat().st_size > 10_000 and saved["heatmaps"] == "scenes_heatmaps.png"
    for name in ("coop", "gallop"):  # training loss of every step of the first seed (2 shots x 8 classes: 1 step)
        rows = (out / "artifacts" / f"scenes_curve_{name}.csv").read_text().split()
        assert rows[0] == "step,loss" and len(rows) == 2
    assert (
        scene_study.main([*argv, "--threads", "1", "--tune", "--lrs", "0.01", "--epochs-grid", "1", "--set", *sets])
        == 0
    )
    tuned = json.loads((out / "tuning.json").read_text())["rows"]
    assert [(r["method"], r["lr"], r["epochs"]) for r in tuned] == [("CoOp", 0.01, 1), ("GalLoP", 0.01, 1)]
