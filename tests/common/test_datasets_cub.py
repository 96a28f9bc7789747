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
