"""SOP reader on a tiny fixture tree in the official layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.data.datasets.sop import StanfordOnlineProducts, read_sop_split
from common.data.errors import DatasetNotFoundError


def make_sop(root):
    rows = {
        "train": [
            (1, 1, 1, "bicycle_final/a_0.JPG"),
            (2, 1, 1, "bicycle_final/a_1.JPG"),
            (3, 2, 3, "chair_final/b_0.JPG"),
        ],
        "test": [(4, 11319, 2, "cabinet_final/c_0.JPG"), (5, 11320, 12, "toaster_final/d_0.JPG")],
    }
    for split, rs in rows.items():
        lines = ["image_id class_id super_class_id path"] + [" ".join(map(str, r)) for r in rs]
        (root / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
        for r in rs:
            p = root / r[3]
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 5, 3), r[0] * 10, dtype=np.uint8)).save(p, format="JPEG")
    return rows


def test_sop_levels_and_items(tmp_path):
    make_sop(tmp_path)
    ds = StanfordOnlineProducts(tmp_path, "train", levels=1)
    assert len(ds) == 3 and ds.labels.tolist() == [0, 0, 1]
    item = ds[2]
    assert item["index"] == 2 and item["label"].item() == 1 and item["image"].size == (5, 4)
    ds2 = StanfordOnlineProducts(tmp_path, "test", levels=2)
    assert ds2.labels.tolist() == [[11318, 1], [11319, 11]]
    assert ds2.paths[0].endswith("cabinet_final/c_0.JPG")


def test_sop_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-sop"):
        StanfordOnlineProducts(tmp_path / "missing")
    tmp_path.joinpath("Ebay_train.txt").write_text("a b c\n1 2 3\n")
    with pytest.raises(ValueError, match="header"):
        read_sop_split(tmp_path / "Ebay_train.txt")
    with pytest.raises(DatasetNotFoundError, match="Ebay_test.txt"):
        StanfordOnlineProducts(tmp_path, "test")
    with pytest.raises(ValueError, match=r"Stanford Online Products has levels 1 \(product\), 2 \(product, category\)"):
        StanfordOnlineProducts(tmp_path, levels=3)
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\], got 'val'"):
        StanfordOnlineProducts(tmp_path, split="val")
