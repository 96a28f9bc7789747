"""iNaturalist-2018 reader (Smooth-AP split files, 1/2/7 levels) on a tiny fixture tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.data.datasets.inat import INaturalist2018
from common.data.datasets.inat_hierarchy import INatHierarchyDataset
from common.data.errors import DatasetNotFoundError

TRAIN = ["train_val2018/Plantae/7477/a.jpg", "train_val2018/Aves/3000/b.jpg", "train_val2018/Plantae/7478/c.jpg"]
TEST = ["train_val2018/Insecta/100/d.jpg"]


def make_inat(root):
    (root / "Inat_dataset_splits").mkdir(parents=True)
    (root / "Inat_dataset_splits" / "Inaturalist_train_set1.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("\n".join(TEST) + "\n")
    for p in TRAIN + TEST:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(root / p)
    cats = [
        {"id": 7477, "genus": "G1", "family": "F1", "order": "O1", "class": "C1", "phylum": "P1", "kingdom": "Plantae"},
        {"id": 7478, "genus": "G2", "family": "F1", "order": "O1", "class": "C1", "phylum": "P1", "kingdom": "Plantae"},
        {
            "id": 3000,
            "genus": "G0",
            "family": "F0",
            "order": "O0",
            "class": "Aves",
            "phylum": "Chordata",
            "kingdom": "Animalia",
        },
        {
            "id": 100,
            "genus": "G3",
            "family": "F3",
            "order": "O3",
            "class": "Insecta",
            "phylum": "Arthropoda",
            "kingdom": "Animalia",
        },
    ]
    (root / "train2018.json").write_text(json.dumps({"categories": cats}))


def test_inat_levels(tmp_path):
    make_inat(tmp_path)
    flat = INaturalist2018(tmp_path, "train")
    # species ids 7477, 3000, 7478 renumbered in increasing order of id: 3000 -> 0, 7477 -> 1, 7478 -> 2
    assert flat.labels.tolist() == [1, 0, 2]
    assert flat.original_labels.tolist() == [7477, 3000, 7478]
    assert [c.tolist() for c in flat.class_ids] == [[3000, 7477, 7478]]
    base = INaturalist2018(tmp_path, "train", levels=2)
    # sorted supercategories: Aves = 4, Plantae = 11 (original ids); renumbered Aves -> 0, Plantae -> 1
    assert base.original_labels.tolist() == [[7477, 11], [3000, 4], [7478, 11]]
    assert base.labels.tolist() == [[1, 1], [0, 0], [2, 1]]
    assert [c.tolist() for c in base.class_ids] == [[3000, 7477, 7478], [4, 11]]
    full = INaturalist2018(tmp_path, "train", levels=7)
    assert full.labels.shape == (3, 7)
    # genus names sorted over the whole json: G0, G1, G2, G3 ; kingdoms Animalia=0, Plantae=1
    assert full.original_labels[:, 1].tolist() == [1, 0, 2]
    assert full.original_labels[:, 6].tolist() == [1, 0, 1]
    assert full.labels[:, 1].tolist() == [1, 0, 2]  # G3 is only in the test split: G0..G2 stay 0..2
    assert full.labels[:, 6].tolist() == [1, 0, 1]
    assert full.labels[0, 2] == full.labels[2, 2]  # same family
    test = INaturalist2018(tmp_path, "test", levels=2)
    assert test.labels.tolist() == [[0, 0]] and test.original_labels.tolist() == [[100, 8]] and len(test[0]) == 3


def _assert_contiguous_and_invertible(ds) -> None:
    lab, orig = ds.labels.numpy(), ds.original_labels.numpy()
    assert lab.dtype == np.int64 and lab.shape == orig.shape
    lab, orig = lab.reshape(len(lab), -1), orig.reshape(len(orig), -1)
    for c in range(lab.shape[1]):
        assert sorted(set(lab[:, c].tolist())) == list(range(len(set(orig[:, c].tolist()))))
        assert (ds.class_ids[c][lab[:, c]] == orig[:, c]).all()
        # order-preserving: a smaller original id never gets a larger label
        order = np.argsort(orig[:, c], kind="stable")
        assert (np.diff(lab[order, c]) >= 0).all()


@pytest.mark.parametrize("levels", [1, 2, 7])
@pytest.mark.parametrize("split", ["train", "test"])
def test_inat_labels_contiguous_original_ids_kept(tmp_path, levels, split):
    make_inat(tmp_path)
    _assert_contiguous_and_invertible(INaturalist2018(tmp_path, split, levels=levels))


# Hand-written taxonomy whose name order differs from its lineage order (Abies is a plant, Bubo a bird): it pins
# the numbering, not only the partition. Mus (13) is only in the test split.
TAXA = {
    # id: (genus, family, order, class, phylum, kingdom)
    5: ("Zea", "Poaceae", "Poales", "Liliopsida", "Tracheophyta", "Plantae"),
    7: ("Zea", "Poaceae", "Poales", "Liliopsida", "Tracheophyta", "Plantae"),
    13: ("Mus", "Muridae", "Rodentia", "Mammalia", "Chordata", "Animalia"),
    42: ("Abies", "Pinaceae", "Pinales", "Pinopsida", "Tracheophyta", "Plantae"),
    900: ("Bubo", "Strigidae", "Strigiformes", "Aves", "Chordata", "Animalia"),
}
TAXA_TRAIN = [42, 5, 900, 7, 5]
# What the pre-refactor ROADMAP reader (INaturalist2018, levels=7) gave: the category id, then each rank's name
# indexed among the sorted names of that rank over the whole json (genus: Abies 0, Bubo 1, Mus 2, Zea 3; ...).
OLD_ROADMAP_LEVELS7 = [
    [42, 0, 1, 0, 3, 1, 1],
    [5, 3, 2, 1, 1, 1, 1],
    [900, 1, 3, 3, 0, 0, 0],
    [7, 3, 2, 1, 1, 1, 1],
    [5, 3, 2, 1, 1, 1, 1],
]
# The same renumbered per column to 0..n-1 in increasing order of those ids (species 5, 7, 42, 900 -> 0..3).
EXPECTED_LEVELS7 = [
    [2, 0, 0, 0, 2, 1, 1],
    [0, 2, 1, 1, 1, 1, 1],
    [3, 1, 2, 2, 0, 0, 0],
    [1, 2, 1, 1, 1, 1, 1],
    [0, 2, 1, 1, 1, 1, 1],
]
# What the pre-refactor HAPPIER reader (INatHierarchyDataset) gave: keys "kingdom/.../taxon" sorted as strings.
OLD_HAPPIER_LEVELS7 = [
    [3, 2, 2, 2, 2, 1, 1],
    [1, 1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0, 0],
    [2, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1],
]


def make_taxa(root):
    make_inat(root)
    lines = [f"train_val2018/Plantae/{cid}/{i}.jpg" for i, cid in enumerate(TAXA_TRAIN)]
    (root / "Inat_dataset_splits" / "Inaturalist_train_set1.txt").write_text("\n".join(lines) + "\n")
    (root / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("train_val2018/Mammalia/13/m.jpg\n")
    ranks = ("genus", "family", "order", "class", "phylum", "kingdom")
    cats = [{"id": cid, **dict(zip(ranks, names))} for cid, names in TAXA.items()]
    (root / "train2018.json").write_text(json.dumps({"categories": cats}))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Column by column, a[i] == a[j] exactly when b[i] == b[j] (the labels differ only by their numbering)."""
    return all(
        len(set(zip(a[:, c].tolist(), b[:, c].tolist()))) == len(set(a[:, c].tolist())) == len(set(b[:, c].tolist()))
        for c in range(a.shape[1])
    )


def test_levels7_shared_reader_matches_the_old_labels(tmp_path):
    make_taxa(tmp_path)
    roadmap = INaturalist2018(tmp_path, "train", levels=7)
    happier = INatHierarchyDataset(tmp_path, "train", levels=7)
    assert roadmap.original_labels.tolist() == OLD_ROADMAP_LEVELS7
    assert roadmap.labels.tolist() == EXPECTED_LEVELS7
    # one reader: both classes give the same labels, original ids and class ids
    assert torch.equal(happier.labels, roadmap.labels) and torch.equal(happier.original_labels, roadmap.original_labels)
    assert all((a == b).all() for a, b in zip(happier.class_ids, roadmap.class_ids))
    # HAPPIER's old numbering differs (string keys) but the classes are the same at every level
    assert _same_partition(happier.labels.numpy(), np.array(OLD_HAPPIER_LEVELS7))
    assert not _same_partition(happier.labels.numpy()[:, :2], np.array(OLD_HAPPIER_LEVELS7)[:, [0, 0]])  # not vacuous
    # ids agree between splits: Mus keeps its whole-json ids in the test split
    test = INaturalist2018(tmp_path, "test", levels=7)
    assert test.original_labels.tolist() == [[13, 2, 0, 2, 2, 0, 0]] and test.labels.tolist() == [[0] * 7]
    assert [c.tolist() for c in test.class_ids] == [[13], [2], [0], [2], [2], [0], [0]]
    _assert_contiguous_and_invertible(roadmap)


def test_inat_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-inat"):
        INaturalist2018(tmp_path)
    make_inat(tmp_path)
    with pytest.raises(ValueError, match="levels"):
        INaturalist2018(tmp_path, levels=3)
    with pytest.raises(ValueError, match="supercategories"):
        INaturalist2018(tmp_path, levels=2, supercategories=["Aves"])
    (tmp_path / "train2018.json").rename(tmp_path / "moved.json")
    with pytest.raises(DatasetNotFoundError, match=r"iNaturalist-2018 \(Smooth-AP split\)(.|\n)*train2018.json"):
        INaturalist2018(tmp_path, levels=7)
    (tmp_path / "moved.json").rename(tmp_path / "train2018.json")
    (tmp_path / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("train_val2018/Aves/999/x.jpg\n")
    with pytest.raises(ValueError, match=r"\[999\] \(e.g. from 'train_val2018/Aves/999/x.jpg'\)"):
        INaturalist2018(tmp_path, "test", levels=7)
    (tmp_path / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("bad/path.jpg\n")
    with pytest.raises(ValueError, match="cat_id"):
        INaturalist2018(tmp_path, "test")
