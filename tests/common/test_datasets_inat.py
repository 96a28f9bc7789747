"""iNaturalist-2018 reader (Smooth-AP split files, 1/2/7 levels) on a tiny fixture tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from common.data.datasets.inat import INaturalist2018
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
    assert INaturalist2018(tmp_path, "train").labels.tolist() == [7477, 3000, 7478]
    base = INaturalist2018(tmp_path, "train", levels=2)
    # sorted supercategories: Aves = 4, Plantae = 11
    assert base.labels.tolist() == [[7477, 11], [3000, 4], [7478, 11]]
    full = INaturalist2018(tmp_path, "train", levels=7)
    assert full.labels.shape == (3, 7)
    # genus names sorted G0, G1, G2, G3 ; kingdoms Animalia=0, Plantae=1
    assert full.labels[:, 1].tolist() == [1, 0, 2]
    assert full.labels[:, 6].tolist() == [1, 0, 1]
    assert full.labels[0, 2] == full.labels[2, 2]  # same family
    test = INaturalist2018(tmp_path, "test", levels=2)
    assert test.labels.tolist() == [[100, 8]] and len(test[0]) == 3


def test_inat_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-inat"):
        INaturalist2018(tmp_path)
    make_inat(tmp_path)
    with pytest.raises(ValueError, match="levels"):
        INaturalist2018(tmp_path, levels=3)
    with pytest.raises(ValueError, match="supercategories"):
        INaturalist2018(tmp_path, levels=2, supercategories=["Aves"])
    (tmp_path / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("bad/path.jpg\n")
    with pytest.raises(ValueError, match="cat_id"):
        INaturalist2018(tmp_path, "test")
