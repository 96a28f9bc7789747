"""MS-COCO multi-label reader on tiny instances_*.json files and JPEGs in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.data.datasets.coco_multilabel import COCOMultiLabel, hashing_split, read_instances
from common.data.errors import DataFileError, DatasetNotFoundError
from common.metrics.relevance import multilabel_shared
from tests.helpers.coco_files import instances, make_coco


@pytest.fixture
def coco(tmp_path):
    read_instances.cache_clear()
    return make_coco(tmp_path / "coco")


def test_official_protocol_labels(coco):
    ds = COCOMultiLabel(coco, "train", protocol="official")
    # columns in increasing category id: person (1), car (3), toothbrush (90); images by id, image 9 left out
    assert ds.category_ids.tolist() == [1, 3, 90] and ds.category_names == ["person", "car", "toothbrush"]
    assert ds.image_ids.tolist() == [2, 5, 11, 14, 20] and ds.num_unannotated == 1
    assert ds.labels.dtype == torch.bool and ds.labels.shape == (5, 3)
    assert ds.labels.int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert ds.paths[1].endswith("train2017/000000000005.jpg")
    item = ds[1]
    assert item["label"].tolist() == [True, True, False] and item["image"].size == (8, 6)
    val = COCOMultiLabel(coco, "val", protocol="official")
    assert val.image_ids.tolist() == [30, 33] and val.num_unannotated == 1
    # relevance: number of shared labels
    assert multilabel_shared(val.labels, val.labels).tolist() == [[1, 1], [1, 3]]


def test_crowd_annotations_can_be_left_out(coco):
    ds = COCOMultiLabel(coco, "train", protocol="official", include_crowd=False)
    assert 14 not in ds.image_ids.tolist() and ds.num_unannotated == 2  # image 14 only had a crowd of cars


def test_hashing_protocol(coco):
    kw = dict(protocol="hashing", num_queries=2, num_train=3, split_seed=1)
    q, db, tr = (COCOMultiLabel(coco, s, **kw) for s in ("query", "database", "train"))
    pool = {2, 5, 11, 14, 20, 30, 33}
    assert set(q.image_ids) | set(db.image_ids) == pool and not set(q.image_ids) & set(db.image_ids)
    assert len(q) == 2 and len(db) == 5 and set(tr.image_ids) <= set(db.image_ids) and len(tr) == 3
    assert q.num_unannotated == 2
    # items keep their own labels and files, whichever annotation file they come from
    for ds in (q, db):
        for i, img in enumerate(ds.image_ids.tolist()):
            assert ds.paths[i].endswith(f"{'val' if img >= 30 else 'train'}2017/{img:012d}.jpg")
    assert q.image_ids.tolist() == COCOMultiLabel(coco, "query", **kw).image_ids.tolist()
    other = COCOMultiLabel(coco, "query", protocol="hashing", num_queries=2, num_train=3, split_seed=2)
    assert len(other) == 2


def test_hashing_split_positions():
    parts = hashing_split(20, num_queries=5, num_train=4, seed=0)
    assert sorted(np.concatenate([parts["query"], parts["database"]]).tolist()) == list(range(20))
    assert set(parts["train"]) <= set(parts["database"]) and len(parts["train"]) == 4
    assert np.array_equal(parts["query"], hashing_split(20, 5, 4, seed=0)["query"])
    with pytest.raises(ValueError, match="exceed"):
        hashing_split(5, num_queries=3, num_train=3, seed=0)


def test_errors(coco, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-coco"):
        COCOMultiLabel(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split of protocol 'hashing'"):
        COCOMultiLabel(coco, "val")
    with pytest.raises(ValueError, match="protocol"):
        COCOMultiLabel(coco, "train", protocol="nus")
    (coco / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="instances_val2017.json"):
        COCOMultiLabel(coco, "query")
    bad = instances({1: [(7, 0)]})
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps(bad))
    with pytest.raises(DataFileError, match="annotation 1010: image 1 or category 7 .*make data-coco"):
        COCOMultiLabel(coco, "val", protocol="official")


def test_image_list_multilabel_flag(tmp_path):
    """Boolean [N, C] labels only where asked for: by default a boolean array is still refused."""
    from common.data.datasets.base import ImageListDataset
    from common.data.errors import check_labels

    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    multi = np.array([[True, False], [True, True]])
    assert ImageListDataset(paths, multi, multilabel=True).labels.dtype == torch.bool
    with pytest.raises(ValueError, match="integer tensor"):
        ImageListDataset(paths, multi)
    with pytest.raises(ValueError, match="needs boolean"):
        ImageListDataset(paths, np.array([0, 1]), multilabel=True)
    with pytest.raises(ValueError, match=r"boolean \[N, C\] matrix"):
        check_labels(torch.ones(3, dtype=torch.bool), allow_multilabel=True)
