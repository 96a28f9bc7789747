"""GalLoP against the original code's behaviour (MarcLafon/gallop at f75999e), each expected value worked out here
from the original's definitions, not from our code:

5. the train loader drops the last partial batch (``get_train_loader(..., drop_last=True)``) in every paper row;
6. prompt dropout at p = 0 still draws prompts with replacement: ``tests/gallop/test_losses_scores.py``;
7. the ResNet local path has no positional embedding: ``tests/gallop/test_clip_local.py``;
9. the paper rows run under fp16 AMP (``16-mixed``), and the CPU overrides (rehearsal, tiny runs) still compose;
10. the few-shot parity mode: ``StratifiedShuffleSplit(train_size=K*C, random_state=seed)`` on the labels the original
    sees (classes renumbered by first appearance), and the record and table say which sampling and precision made
    each number;
11. the published CLIP few-shot average (75.7, mean of its values 64.77) is flagged in the tables and the report.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.model_selection import StratifiedShuffleSplit

from common.callbacks.result_record import ResultRecordCallback
from common.rehearsal.run import OVERRIDES
from common.report.build import Page, summary_section, tables_section
from common.results.collect import collect, to_markdown
from common.results.record import ResultRecord, load_records
from gallop.fewshot import FewShotDataModule, first_appearance_labels, gallop_stratified, sample_few_shot
from tests.conftest import CONFIG_DIR, compose_train
from tests.gallop.helpers import TensorImages

ROOT = Path(__file__).resolve().parents[2]
PAPER_ROWS = sorted(p.stem for p in (CONFIG_DIR / "experiment" / "gallop").glob("*_16shot.yaml")) + ["imagenet_coop"]


def _sklearn_split(y, shots: int, seed: int) -> np.ndarray:
    """The original's ``create_few_shots_dataset``: one StratifiedShuffleSplit of K * C items (indices sorted)."""
    n_classes = len(set(y.tolist()))
    split = StratifiedShuffleSplit(n_splits=1, train_size=shots * n_classes, random_state=seed)
    return np.sort(next(split.split(y, y))[0])


# ------------------------------------------------------------------------------------------------ 10. sampling
def test_first_appearance_relabelling_by_hand():
    y = np.array([7, 7, 2, 9, 2, 7, 9, 0])
    # 7 appears first -> 0, then 2 -> 1, 9 -> 2, 0 -> 3
    assert first_appearance_labels(y).tolist() == [0, 0, 1, 2, 1, 0, 2, 3]


def test_parity_sampling_is_the_originals_split_on_first_appearance_labels():
    rng = np.random.default_rng(0)
    # a split file whose classes are listed in another order than their ids (as Flowers' and Cars' are)
    sizes = {5: 31, 1: 12, 4: 47, 0: 9, 3: 26, 2: 18}
    y = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    y = y[rng.permutation(len(y))]
    order: list[int] = []
    for c in y.tolist():  # the original's all_names / name_to_idx, written out
        if c not in order:
            order.append(c)
    y_original = np.array([order.index(c) for c in y.tolist()])
    got = sample_few_shot(y, 4, 1, "gallop_parity")
    assert np.array_equal(got, _sklearn_split(y_original, 4, 1))
    # the renumbering matters: sklearn allocates and draws class by class in label order
    assert not np.array_equal(got, gallop_stratified(y, 4, 1))
    # FGVC-Aircraft keeps its ids in the original: no renumbering
    assert np.array_equal(
        sample_few_shot(y, 4, 1, "gallop_parity", relabel_first_appearance=False), _sklearn_split(y, 4, 1)
    )


def test_parity_sampling_is_proportional_not_exact_k():
    y = np.repeat(np.arange(4), [4, 8, 16, 92])
    idx = sample_few_shot(y, 2, 1, "gallop_parity")
    counts = np.bincount(y[idx], minlength=4)
    assert counts.sum() == 8 and counts[3] >= 5 and counts[0] <= 1  # 8 * 92 / 120 = 6.1 for the largest class


def test_parity_rows_get_their_own_row_name(tmp_path):
    cfg = compose_train(["experiment=gallop/oxford_flowers_16shot"], tmp_path)
    assert cfg.row == "oxford_flowers_16shot" and cfg.data.sampling == "coop_exact_k"
    cfg = compose_train(["experiment=gallop/oxford_flowers_16shot", "data.sampling=gallop_parity"], tmp_path)
    assert cfg.row == "oxford_flowers_16shot_gallop_parity"
    cfg = compose_train(["experiment=gallop/imagenet_coop", "data.sampling=gallop_parity", "data.shots=4"], tmp_path)
    assert cfg.row == "imagenet_coop_gallop_parity"
    assert compose_train(["experiment=gallop/fgvc_aircraft_16shot"], tmp_path).data.relabel_first_appearance is False


# ------------------------------------------------------------------------------------------------ 5. drop_last
def _dm(n_per_class: int, n_classes: int, batch: int, drop_last: bool) -> FewShotDataModule:
    return FewShotDataModule(
        TensorImages(n_per_class, n_classes),
        TensorImages(1, n_classes, seed=1),
        shots=n_per_class,
        batch_size=batch,
        drop_last=drop_last,
    )


def test_train_loader_drops_the_last_partial_batch_like_the_original():
    # 37 items (Pets at 1 shot), batch 8: the original's loader gives floor(37 / 8) = 4 full batches
    sizes = [len(b["label"]) for b in _dm(1, 37, 8, drop_last=True).train_dataloader()]
    assert sizes == [8, 8, 8, 8]
    sizes = [len(b["label"]) for b in _dm(1, 37, 8, drop_last=False).train_dataloader()]
    assert sizes == [8, 8, 8, 8, 5]


def test_drop_last_with_fewer_items_than_a_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch of 32.*data.drop_last=false"):
        _dm(1, 10, 32, drop_last=True).train_dataloader()


# ------------------------------------------------------------------------------------------------ 5, 9: paper rows
@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_rows_drop_the_last_batch_and_use_fp16_amp(row, tmp_path):
    cfg = compose_train([f"experiment=gallop/{row}"], tmp_path)
    assert cfg.data.drop_last is True
    assert cfg.trainer.precision == "16-mixed"


def test_zero_shot_row_evaluates_under_fp16_amp(tmp_path):
    assert compose_train(["experiment=gallop/imagenet_zeroshot"], tmp_path).trainer.precision == "16-mixed"


@pytest.mark.parametrize("row", ["dtd_16shot", "imagenet_coop", "imagenet_zeroshot"])
def test_rehearsal_overrides_put_paper_rows_on_cpu_fp32(row, tmp_path):
    cfg = compose_train([f"experiment=gallop/{row}", *OVERRIDES["gallop"]], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("cpu", "32-true")


def test_tiny_cpu_experiment_keeps_fp32(tmp_path):
    cfg = compose_train(["experiment=gallop/fmnist_tiny"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("cpu", "32-true")


# ------------------------------------------------------------------------------------------------ 10: records
def test_record_carries_precision_and_sampling(tmp_path):
    dm = FewShotDataModule(TensorImages(2, 3), TensorImages(1, 3), shots=2, sampling="gallop_parity")
    dm.setup("test")
    assert dm.record_protocol() == {}  # a test-only run (zero-shot CLIP) draws no few-shot set
    dm.setup("fit")
    trainer = SimpleNamespace(
        is_global_zero=True, callback_metrics={"test/acc": 50.0}, loggers=[], precision="16-mixed", datamodule=dm
    )
    cb = ResultRecordCallback("gallop", "few_shot", "dtd_16shot_gallop_parity", 1, records_dir=str(tmp_path))
    cb.on_test_end(trainer, None)
    (record,) = load_records(tmp_path)
    assert record.protocol == {"precision": "16-mixed", "sampling": "gallop_parity"}


def _record(row: str, seed: int, acc: float, **protocol: str) -> ResultRecord:
    return ResultRecord(
        method="gallop", table="few_shot", row=row, seed=seed, metrics={"acc": acc}, date=f"2026-01-0{seed}",
        protocol=protocol,
    )  # fmt: skip


def _few_shot(records: list[ResultRecord]):
    return next(t for t in collect(records, ROOT / "results", ("gallop",)) if t.id == "few_shot")


def test_tables_say_which_sampling_and_precision_made_each_row():
    records = [
        _record("dtd_16shot", 1, 70.0, precision="16-mixed", sampling="coop_exact_k"),
        _record("dtd_16shot", 2, 72.0, precision="16-mixed", sampling="coop_exact_k"),
        _record("imagenet_coop", 1, 71.0, precision="32-true", sampling="coop_exact_k"),
        _record("imagenet_coop", 2, 71.0, precision="16-mixed", sampling="coop_exact_k"),
    ]
    table = _few_shot(records)
    rows = {r.key: r for r in table.rows}
    assert rows["GalLoP"].protocol == "precision 16-mixed, sampling coop_exact_k"
    assert rows["CoOp"].protocol == "precision 16-mixed / 32-true (mixed), sampling coop_exact_k"
    assert rows["PLOT"].protocol == ""
    md = to_markdown(table)
    assert "[precision 16-mixed, sampling coop_exact_k] | ours |" in md
    assert rows["GalLoP"].cells["dtd"].mean == pytest.approx(71.0)


# ------------------------------------------------------------------------------------------------ 11: CLIP's average
def test_clip_average_typo_is_flagged_in_the_table_and_the_report(tmp_path):
    table = _few_shot([])
    rows = {r.key: r for r in table.rows}
    clip_avg = rows["CLIP"].cells["average"]
    # (66.7 + 92.2 + 88.4 + 65.5 + 70.7 + 84.8 + 24.8 + 62.3 + 44.1 + 48.3 + 64.7) / 11 = 712.5 / 11 = 64.77
    assert clip_avg.published == 75.7 and "64.77" in clip_avg.flag
    assert clip_avg.published_text() == "75.7 (!)"
    # the other rows' averages agree with their values to rounding: CoOp 79.88 vs 79.9, PromptSRC 82.95 vs 82.9
    assert all(r.cells["average"].flag is None for k, r in rows.items() if k != "CLIP")
    assert "- (!) CLIP, average: published 75.7, but the mean of the 11 published values it averages is 64.77" in (
        to_markdown(table)
    )
    page = Page(out_dir=tmp_path)
    summary_section(page, [table])
    tables_section(page, [table], ROOT / "results")
    report = "\n".join(page.md)
    assert "Published values flagged (!) as suspect:" in report
    assert report.count("64.77") >= 2 and "| 75.7 (!) |" in report
