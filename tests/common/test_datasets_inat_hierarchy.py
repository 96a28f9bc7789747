"""iNaturalist-2018 7-level reader on a fixture tree in the official layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.datasets import base
from common.data.datasets.inat_hierarchy import INAT_LEVELS, INatHierarchyDataset, relabel_columns
from common.data.errors import DatasetNotFoundError

CATS = [
    # id, genus, family, order, class, phylum, kingdom, supercategory
    (10, "Quercus", "Fagaceae", "Fagales", "Magnoliopsida", "Tracheophyta", "Plantae", "Plantae"),
    (11, "Quercus", "Fagaceae", "Fagales", "Magnoliopsida", "Tracheophyta", "Plantae", "Plantae"),
    (20, "Fagus", "Fagaceae", "Fagales", "Magnoliopsida", "Tracheophyta", "Plantae", "Plantae"),
    (30, "Parus", "Paridae", "Passeriformes", "Aves", "Chordata", "Animalia", "Aves"),
    # a homonym genus under another family: must stay a different genus
    (31, "Fagus", "Otheridae", "Passeriformes", "Aves", "Chordata", "Animalia", "Aves"),
]


def _write_tree(root: Path) -> None:
    cats = []
    for cid, genus, family, order, klass, phylum, kingdom, sup in CATS:
        cats.append(
            {
                "id": cid,
                "name": f"sp{cid}",
                "supercategory": sup,
                "kingdom": kingdom,
                "phylum": phylum,
                "class": klass,
                "order": order,
                "family": family,
                "genus": genus,
            }
        )
    (root / "train2018.json").write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    (root / "Inat_dataset_splits").mkdir()
    lines = {"train": [], "test": []}
    for cid, *_, sup in CATS:
        for k in range(2):
            rel = f"train_val2018/{sup}/{cid}/img{cid}_{k}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), color=(cid, k, 0)).save(root / rel)
            lines["train" if cid != 20 else "test"].append(rel)
    for split, ls in lines.items():
        (root / "Inat_dataset_splits" / f"Inaturalist_{split}_set1.txt").write_text("\n".join(ls) + "\n\n")


def test_full_hierarchy_labels(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    ds = INatHierarchyDataset(tmp_path, split="train")
    assert ds.level_names == INAT_LEVELS
    lab = ds.labels.numpy()
    assert lab.shape == (8, 7)
    ids = [int(Path(p).parent.name) for p in ds.paths]
    row = {cid: lab[i] for i, cid in enumerate(ids)}
    # species: 4 train categories -> 0..3 in increasing order of category id; two images each share the row
    assert [row[cid][0] for cid in (10, 11, 30, 31)] == [0, 1, 2, 3]
    assert ds.original_labels[:, 0].tolist() == ids and ds.class_ids[0].tolist() == [10, 11, 30, 31]
    # 10 and 11 share genus Quercus and everything above
    assert (row[10][1:] == row[11][1:]).all() and row[10][0] != row[11][0]
    # 31's genus "Fagus" is not 10's genus, and differs from any plant genus (tree keying)
    assert row[31][1] != row[10][1]
    # 30 and 31: same order, class, phylum, kingdom; different family
    assert (row[30][3:] == row[31][3:]).all() and row[30][2] != row[31][2]
    # plants and animals differ at the kingdom
    assert row[10][6] != row[30][6]
    # every column is 0..n-1
    for c in range(7):
        assert sorted(set(lab[:, c])) == list(range(len(set(lab[:, c]))))
    item = ds[0]
    assert set(item) == {"image", "label", "index"} and item["label"].shape == (7,)


def test_levels_and_test_split(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    ds = INatHierarchyDataset(tmp_path, split="test", levels=2)
    assert ds.labels.shape == (2, 2)
    assert ds.labels[:, 0].tolist() == [0, 0]
    # original ids: category 20, and Fagus (under Fagaceae) among the whole json's genus lineages:
    # (Fagus, Fagaceae, ...) < (Fagus, Otheridae, ...) < (Parus, ...) < (Quercus, ...) -> 0
    assert ds.original_labels.tolist() == [[20, 0], [20, 0]] and ds.labels.tolist() == [[0, 0], [0, 0]]
    assert [c.tolist() for c in ds.class_ids] == [[20], [0]]


def test_original_ids_kept_and_labels_contiguous(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    ds = INatHierarchyDataset(tmp_path, split="train")
    lab, orig = ds.labels.numpy(), ds.original_labels.numpy()
    # genus lineages of the whole json, sorted: Fagus/Fagaceae 0, Fagus/Otheridae 1, Parus 2, Quercus 3; the train
    # split lacks Fagus/Fagaceae (category 20), so its genus ids are sparse (1, 2, 3) and renumbered 0, 1, 2
    ids = [int(Path(p).parent.name) for p in ds.paths]
    genus = {10: 3, 11: 3, 30: 2, 31: 1}
    assert orig[:, 1].tolist() == [genus[c] for c in ids]
    assert lab[:, 1].tolist() == [genus[c] - 1 for c in ids]
    for c in range(7):
        assert (ds.class_ids[c][lab[:, c]] == orig[:, c]).all()
        assert sorted(set(lab[:, c].tolist())) == list(range(len(ds.class_ids[c])))


def test_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="data-inat"):
        INatHierarchyDataset(tmp_path / "nope")
    _write_tree(tmp_path)
    (tmp_path / "train2018.json").rename(tmp_path / "moved.json")
    with pytest.raises(DatasetNotFoundError, match="iNaturalist-2018 annotations not found"):
        INatHierarchyDataset(tmp_path)
    (tmp_path / "moved.json").rename(tmp_path / "train2018.json")
    with open(tmp_path / "Inat_dataset_splits" / "Inaturalist_train_set1.txt", "a") as f:
        f.write("train_val2018/Aves/999/x.jpg\n")
    with pytest.raises(ValueError, match="999"):
        INatHierarchyDataset(tmp_path)
    with pytest.raises(ValueError, match="levels"):
        INatHierarchyDataset(tmp_path, levels=8)


def test_relabel_columns() -> None:
    assert relabel_columns is base.relabel_columns  # one helper, re-exported for the old import path
    got = relabel_columns(np.array([[5, 9], [3, 9], [5, 1]]))
    assert got.tolist() == [[1, 1], [0, 1], [1, 0]]


@pytest.mark.parametrize("shape", [(50,), (50, 3)])
def test_remap_labels_against_a_lookup_table(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    orig = rng.choice([3, 17, 8141, 40, 999, 2], size=shape)
    new, class_ids = base.remap_labels(orig)
    assert new.shape == orig.shape and new.dtype == np.int64
    cols = orig.reshape(len(orig), -1)
    for c, ids in enumerate(class_ids):
        # independent computation: rank of each value among the sorted distinct values of its column
        lut = {v: k for k, v in enumerate(sorted(set(cols[:, c].tolist())))}
        assert new.reshape(len(new), -1)[:, c].tolist() == [lut[v] for v in cols[:, c].tolist()]
        assert ids.tolist() == sorted(lut)
    with pytest.raises(ValueError, match="shape"):
        base.remap_labels(np.zeros((2, 2, 2), dtype=np.int64))
