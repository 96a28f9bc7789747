"""The multi-label demo part: its two launcher configs on tiny two-garment data (a couple of steps, result record read
back), the grid's frames (number of shared labels), the top-k shared-label fractions, and its table and verdict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from common.launch import run
from common.rehearsal.layouts import write_fashion_mnist
from common.results.record import ResultRecord, load_records
from common.viz.retrieval_grid import grid_levels, retrieval_topk
from happier import demo
from tests.conftest import compose_train


@pytest.fixture
def pairs_data(tmp_path: Path) -> Path:
    """Fashion-MNIST IDX files with 20 train / 10 test images per class: 2 train and 1 test item per pair."""
    write_fashion_mnist(tmp_path / "data" / "fashion-mnist", per_class=20)
    return tmp_path / "data"


TINY = [
    "data.train_dataset.per_pair=2",
    "data.test_dataset.per_pair=1",
    "data.batch_size=16",
    "data.sampler.m=2",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "logger=csv",
    "callbacks.retrieval_grid.query_idx=[0,7]",
    "callbacks.retrieval_grid.k=3",
]


@pytest.mark.parametrize(
    ("experiment", "row", "train_labels"),
    [("demo_ml", "ml_happier", torch.bool), ("demo_ml_roadmap", "ml_roadmap", torch.int64)],
)
def test_demo_ml_config_runs_through_the_launcher_and_writes_its_record(
    experiment: str, row: str, train_labels: torch.dtype, pairs_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = compose_train([f"experiment=happier/{experiment}", f"paths.data_dir={pairs_data}", *TINY], out)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    metrics, objs = run(cfg)
    assert objs["trainer"].global_step == 2
    dm = objs["datamodule"]
    assert dm.train_dataset.labels.dtype == train_labels  # HAPPIER sees both labels, ROADMAP the pair id
    assert dm.test_dataset.labels.dtype == torch.bool and dm.test_dataset.labels.shape == (45, 10)
    (record,) = load_records(Path(os.environ["RESULTS_RECORDS_DIR"]))
    assert (record.method, record.table, record.row, record.seed) == ("happier", "demo", row, 0)
    assert record.dataset == "fashion_mnist_pairs"
    for key in ("hap", "asi", "ndcg", "recall@1", "map@r"):
        assert 0.0 < record.metrics[key] <= 1.0 and record.metrics[key] == pytest.approx(metrics[f"test/{key}"])
    grid = json.loads((out / "retrieval_grid.json").read_text())
    assert grid["num_levels"] == 2 and grid["level_names"] == ["no shared label", "1 shared label", "2 shared labels"]
    labels = dm.test_dataset.labels
    for q, top, levels in zip(grid["query_idx"], grid["topk"], grid["levels"], strict=True):
        assert levels == [int((labels[q] & labels[j]).sum()) for j in top] and q not in top


def _items(spec: list[tuple[int, int]]) -> torch.Tensor:
    labels = torch.zeros(len(spec), 10, dtype=torch.bool)
    for i, (a, b) in enumerate(spec):
        labels[i, a] = labels[i, b] = True
    return labels


def test_grid_frames_count_shared_labels() -> None:
    """Query {0, 1}; items on a line of decreasing cosine: {0, 1}, {0, 5}, {2, 3}, {1, 4}."""
    labels = _items([(0, 1), (0, 1), (0, 5), (2, 3), (1, 4)])
    angles = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    top, levels = retrieval_topk(emb, labels, [0], k=4)
    assert top.tolist() == [[1, 2, 3, 4]] and levels.tolist() == [[2, 1, 0, 1]]
    assert grid_levels(labels) == (2, ["no shared label", "1 shared label", "2 shared labels"])
    assert grid_levels(torch.tensor([[0, 1], [2, 1]]))[0] == 2  # hierarchies keep their levels


def test_shared_label_fractions_hand_worked() -> None:
    """Items 0, 1 = {0, 1} and items 2, 3 = {0, 2}, {3, 4}: embeddings put 0 next to 1 and 2 next to 3.
    Top-1: 0 -> 1 (t=2), 1 -> 0 (t=2), 2 -> 3 (t=0), 3 -> 2 (t=0): fractions [0.5, 0, 0.5] for t = 0, 1, 2."""
    labels = _items([(0, 1), (0, 1), (0, 2), (3, 4)]).numpy()
    emb = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]], dtype=np.float32)
    np.testing.assert_allclose(demo.shared_label_fractions(emb, labels, k=1), [0.5, 0.0, 0.5])
    # top-3 = everything else: per query the t of the three others, averaged
    expected = np.bincount([2, 1, 0, 2, 1, 0, 1, 1, 0, 0, 0, 0], minlength=3) / 12
    np.testing.assert_allclose(demo.shared_label_fractions(emb, labels, k=3), expected)


def test_table_and_claim_from_records_and_fractions() -> None:
    recs = [
        ResultRecord("happier", "demo", row, seed, {"hap": hap + 0.01 * seed, "ndcg": hap, "recall@1": 0.8})
        for row, hap in (("ml_happier", 0.4), ("ml_roadmap", 0.35))
        for seed in (0, 1, 2)
    ]
    fractions = {
        "ml_happier": {s: [0.1, 0.5, 0.40 + 0.01 * s] for s in (0, 1, 2)},
        "ml_roadmap": {s: [0.2, 0.5, 0.30 + 0.02 * s] for s in (0, 1, 2)},
    }
    md = demo.ml_table(recs, fractions, "make demo-multilabel", [0, 1, 2])
    assert "| top-8 sharing both labels | 41.00 ± 0.82 (n=3) | 32.00 ± 1.63 (n=3) |" in md
    assert "| H-AP | 41.00 ± 0.82 (n=3) | 36.00 ± 0.82 (n=3) |" in md and "| ASI | n/a | n/a |" in md
    c = demo.ml_claim(recs, fractions)
    assert c["holds"] and c["n_seeds"] == 3 and c["deltas"]["both_labels@k"]["mean"] == pytest.approx(0.09)
    head = demo.ml_headline(fractions, c)
    assert head["ours"].endswith("41.0 ± 0.8") and head["verdict"].startswith("claim holds over 3 seeds")
    # ROADMAP ahead on both labels: the claim does not hold, and says so
    swapped = {"ml_happier": fractions["ml_roadmap"], "ml_roadmap": fractions["ml_happier"]}
    assert not demo.ml_claim(recs, swapped)["holds"]


@pytest.mark.slow
def test_multilabel_demo_runs_both_rows_and_writes_outputs(pairs_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    payload = demo.main(
        [
            "--part",
            "multilabel",
            "--out",
            str(out),
            "--seeds",
            "0,1",
            f"paths.data_dir={pairs_data}",
            *TINY,
            "trainer.log_every_n_steps=1",
        ]
    )
    saved = json.loads((out / "multilabel.json").read_text())
    assert set(saved["rows"]) == {"ml_happier", "ml_roadmap"} == set(payload["rows"])
    for row in saved["rows"].values():
        for key in ("hap", "asi", "ndcg", "recall@1", "top8_both_labels"):
            assert row[key]["n"] == 2 and 0.0 <= row[key]["mean"] <= 1.0
    for per_seed in saved["topk_shared_fractions"]["per_seed"].values():
        assert sorted(per_seed) == ["0", "1"] and all(sum(f) == pytest.approx(1.0) for f in per_seed.values())
    assert sorted(p.name for p in (out / "records" / "happier" / "demo").glob("*.json")) == [
        "ml_happier-s0.json",
        "ml_happier-s1.json",
        "ml_roadmap-s0.json",
        "ml_roadmap-s1.json",
    ]
    assert saved["claim"]["n_seeds"] == 2 and "rests on 2 seed(s) only" in saved["claim"]["detail"]
    assert saved["headline"]["task"] == "Multi-label"
    md = (out / "multilabel.md").read_text()
    assert "| top-8 sharing both labels |" in md and "python -m happier.demo --part multilabel" in md
    assert (out / "multilabel_grid.png").stat().st_size > 1000
    for row in ("ml_happier", "ml_roadmap"):
        assert (out / "artifacts" / f"multilabel_curve_{row}.csv").read_text().startswith("step,loss")


def test_make_demo_runs_the_part_through_happier_demo(tmp_path: Path, monkeypatch) -> None:
    from common import demo as runner

    calls = []
    monkeypatch.setattr(runner.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    assert "multilabel" in runner.available() and "multilabel" in runner.LAUNCHER_DEMOS
    assert (
        runner.main(["--only", "multilabel", "--out", str(tmp_path), "--seeds", "0,1,2", "trainer.max_epochs=1"]) == 0
    )
    (cmd,) = calls
    assert cmd[1:] == [
        "-m",
        "happier.demo",
        "--part",
        "multilabel",
        "--out",
        str(tmp_path),
        "--seeds",
        "0,1,2",
        "trainer.max_epochs=1",
    ]


def test_report_shows_the_multilabel_section(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.report.build import build

    run = tmp_path / "demo"
    run.mkdir()
    (run / "multilabel.md").write_text("## Multi-label retrieval\n\n| metric | HAPPIER | ROADMAP |\n|---|---|---|\n")
    claim = {"text": demo.ML_CLAIM, "holds": False, "detail": "both_labels@k -0.2 (within noise)"}
    (run / "multilabel.json").write_text(json.dumps({"claim": claim}))
    plt.imsave(run / "multilabel_grid.png", np.zeros((8, 16)))
    plt.imsave(run / "happier_grid.png", np.ones((8, 16)))
    summary = build(run, tmp_path / "report", tmp_path / "results", tmp_path / "records", reference_dir=None)
    assert "multilabel" in summary["sections"]
    text = (tmp_path / "report" / "REPORT.md").read_text()
    section = text.split("### Multi-label retrieval: HAPPIER vs ROADMAP on two garments", 1)[1].split("\n### ", 1)[0]
    assert "| metric | HAPPIER | ROADMAP |" in section and "does NOT agree with" in section
    assert "multilabel_grid.png" in section and "happier_grid.png" not in section
    happier = text.split("### Hierarchical retrieval: HAPPIER vs ROADMAP", 1)[1].split("\n### ", 1)[0]
    assert "multilabel_grid.png" not in happier
