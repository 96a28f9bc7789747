"""In-Shop reader (list_eval_partition.txt) on a tiny fixture tree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.data.datasets.inshop import InShop
from common.data.errors import DatasetNotFoundError

ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000007/01_1_front.jpg", "id_00000007", "train"),
    ("img/WOMEN/Dresses/id_00000010/01_1_front.jpg", "id_00000010", "query"),
    ("img/WOMEN/Dresses/id_00000010/01_2_side.jpg", "id_00000010", "gallery"),
    ("img/MEN/Denim/id_00000011/01_2_side.jpg", "id_00000011", "gallery"),
]


def make_inshop(root, rows=ROWS, count=None):
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    lines += [" ".join(r) for r in rows]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for r in rows:
        (root / r[0]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(root / r[0])


def test_inshop_splits_and_levels(tmp_path):
    make_inshop(tmp_path)
    train = InShop(tmp_path, "train", levels=2)
    # categories sorted: MEN/Denim = 0, WOMEN/Dresses = 1
    assert train.labels.tolist() == [[2, 1], [7, 0]]
    query, gallery = InShop(tmp_path, "query"), InShop(tmp_path, "gallery")
    assert query.labels.tolist() == [10] and gallery.labels.tolist() == [10, 11]
    assert gallery[1]["label"].item() == 11


def test_inshop_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-inshop"):
        InShop(tmp_path)
    make_inshop(tmp_path, count=9)
    with pytest.raises(ValueError, match="rows"):
        InShop(tmp_path)
    with pytest.raises(ValueError, match="split"):
        InShop(tmp_path, split="test")
