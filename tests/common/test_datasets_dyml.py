"""DyML Vehicle/Animal/Product readers on fixture trees with the official CSV quirks, and the averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.datasets.dyml import DyMLDataset, dyml_overall, query_gallery_indices, read_dyml_csv
from common.data.errors import DatasetNotFoundError

TRAIN_HEADER = "fname, fine_id0.jpg, middle_id, coarse_id"


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), color=(10, 20, 30)).save(path)


def _write_train(root: Path) -> None:
    rows = [("a.jpg", 100, 7, 3), ("b.jpg", 100, 7, 3), ("c.jpg", 205, 7, 3), ("d.jpg", 301, 9, 1)]
    (root / "train").mkdir(parents=True)
    text = TRAIN_HEADER + "\n" + "\n".join(f"{f}, {a}, {b}, {c}" for f, a, b, c in rows) + "\n"
    (root / "train" / "label.csv").write_text(text)
    for f, *_ in rows:
        _img(root / "train" / "imgs" / f)


def _write_vehicle(root: Path) -> None:
    _write_train(root)
    for bmk in ("fine", "middle", "coarse"):
        d = root / f"bmk_{bmk}"
        d.mkdir()
        (d / "query.csv").write_text("fname, labels0.jpg\nq1.jpg, 4\nq2.jpg, 5\n")
        (d / "gallery.csv").write_text("fname, labels0.jpg\ng1.jpg, 4\nq1.jpg, 4\ng2.jpg, 5\n")
        for f in ("q1.jpg", "q2.jpg"):
            _img(d / "query" / f)
        for f in ("g1.jpg", "q1.jpg", "g2.jpg"):
            _img(d / "gallery" / f)


def test_train_split_reads_quirky_header_and_relabels(tmp_path: Path) -> None:
    root = tmp_path / "dyml_vehicle"
    _write_vehicle(root)
    ds = DyMLDataset(root, split="train")
    assert ds.labels.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 1], [2, 1, 0]]
    assert Path(ds.paths[2]) == root / "train" / "imgs" / "c.jpg"
    assert ds[3]["label"].tolist() == [2, 1, 0]


def test_benchmarks_are_single_level_and_queries_map_into_gallery(tmp_path: Path) -> None:
    root = tmp_path / "dyml_animal"
    _write_vehicle(root)
    q = DyMLDataset(root, split="query", benchmark="middle")
    g = DyMLDataset(root, split="gallery", benchmark="middle", drop_queries=False)
    assert q.labels.tolist() == [4, 5] and g.labels.tolist() == [4, 4, 5]
    # default: the query's own copy is left out of the gallery (the original dropped the first hit instead)
    g2 = DyMLDataset(root, split="gallery", benchmark="middle")
    assert g2.fnames == ["g1.jpg", "g2.jpg"] and g2.labels.tolist() == [4, 5] and g2.num_dropped_queries == 1
    assert Path(g.paths[1]) == root / "bmk_middle" / "gallery" / "q1.jpg"
    idx = query_gallery_indices(q.fnames, g.fnames)
    assert idx["query_idx"].tolist() == [1, 3]  # q1 is gallery item 1; q2 is appended after the gallery
    assert idx["extra_query"].tolist() == [1]
    with pytest.raises(ValueError, match="benchmark"):
        DyMLDataset(root, split="query")


def test_product_all_in_one(tmp_path: Path) -> None:
    root = tmp_path / "dyml_product"
    _write_train(root)
    d = root / "mini-bmk_all_in_one"
    d.mkdir()
    (d / "label.csv").write_text(TRAIN_HEADER + "\nx.jpg, 1, 2, 3\ny.jpg, 1, 4, 3\n")
    _img(d / "imgs" / "x.jpg")
    _img(d / "imgs" / "y.jpg")
    ds = DyMLDataset(root, split="test")
    assert ds.labels.tolist() == [[1, 2, 3], [1, 4, 3]]  # test ids kept as they are


def test_clean_headers_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("fname,fine_id,middle_id,coarse_id\na.jpg,1,2,3\n\n")
    names, lab = read_dyml_csv(p, (("fine_id0.jpg", "fine_id"), ("middle_id",), ("coarse_id",)))
    assert names == ["a.jpg"] and lab.tolist() == [[1, 2, 3]]
    p.write_text("fname, other\na.jpg, 1\n")
    with pytest.raises(ValueError, match="fine_id"):
        read_dyml_csv(p, (("fine_id0.jpg", "fine_id"),))
    p.write_text("fname, labels0.jpg\na.jpg, x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_dyml_csv(p, (("labels0.jpg",),))
    with pytest.raises(DatasetNotFoundError, match="data-dyml-vehicle"):
        DyMLDataset(tmp_path / "dyml_vehicle")


def test_overall_average_inter_and_intra_set() -> None:
    res = {"fine": {"map": 0.2, "recall@1": 0.5}, "middle": {"map": 0.4, "recall@1": 0.7}, "coarse": {"map": 0.9}}
    out = dyml_overall(res)
    assert out["map"] == pytest.approx(0.5)
    assert out["recall@1"] == pytest.approx(0.6)
    assert dyml_overall(res, weights={"coarse": 2.0})["map"] == pytest.approx((0.2 + 0.4 + 1.8) / 4)
    with pytest.raises(ValueError):
        dyml_overall({})
    assert np.isfinite(out["map"])
