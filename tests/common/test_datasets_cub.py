"""CUB-200-2011 reader: first/last classes by sorted folder name, on a tiny fixture tree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.data.datasets.cub import CUB200
from common.data.errors import DatasetNotFoundError


def make_cub(root, n_classes=6, per_class=2):
    names = [f"{i + 1:03d}.Bird_{n_classes - i}" for i in range(n_classes)]  # sorted by number, not by suffix
    for name in reversed(names):  # creation order must not matter
        d = root / "images" / name
        d.mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8)).save(d / f"img_{k}.jpg")
        (d / "notes.txt").write_text("not an image")
    return names


def test_cub_split_by_sorted_class_folders(tmp_path):
    names = make_cub(tmp_path)
    train = CUB200(tmp_path, "train", num_train_classes=3)
    test = CUB200(tmp_path, "test", num_train_classes=3)
    assert train.classes == names[:3] and test.classes == names[3:]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.labels.tolist() == [3, 3, 4, 4, 5, 5]
    assert all(p.endswith(".jpg") for p in train.paths)
    assert train[0]["image"].mode == "RGB"


def test_cub_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-cub"):
        CUB200(tmp_path)
    make_cub(tmp_path, n_classes=2)
    with pytest.raises(ValueError, match="class folders"):
        CUB200(tmp_path)  # default 100 train classes, only 2 folders
    with pytest.raises(ValueError, match="split"):
        CUB200(tmp_path, split="val")


def test_cub_three_levels_follow_the_taxonomy(tmp_path):
    from common.data.datasets.cub_taxonomy import FAMILY, ORDER

    assert len(FAMILY) == len(ORDER) == 200
    assert len(set(FAMILY)) == 38 and len(set(ORDER)) == 13  # the SupRank code's CUB hierarchy
    assert len(set(FAMILY[:100])) == 30 and len(set(ORDER[:100])) == 13  # its train-split class counts
    family_to_order = {}
    for f, o in zip(FAMILY, ORDER, strict=True):
        assert family_to_order.setdefault(f, o) == o  # nested: a family lies in one order
    assert FAMILY[0] == FAMILY[1] == FAMILY[2] and ORDER[0] == ORDER[44]  # 001-003 albatrosses; 045 a fulmar
    make_cub(tmp_path, n_classes=200, per_class=1)
    train = CUB200(tmp_path, "train", levels=3)
    assert train.labels.shape == (100, 3)
    assert train.labels[:3].tolist() == [[0, FAMILY[0], ORDER[0]], [1, FAMILY[1], ORDER[1]], [2, FAMILY[2], ORDER[2]]]
    assert CUB200(tmp_path, "test", levels=3).labels[0].tolist() == [100, FAMILY[100], ORDER[100]]
    with pytest.raises(ValueError, match="levels 1"):
        CUB200(tmp_path, levels=2)


def test_cub_three_levels_need_the_200_classes(tmp_path):
    make_cub(tmp_path, n_classes=6)
    with pytest.raises(ValueError, match="200 class folders"):
        CUB200(tmp_path, num_train_classes=3, levels=3)
