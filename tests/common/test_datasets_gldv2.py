"""GLDv2 / H-GLDv2 readers on a tiny tree in the official layout, and the solution-file -> labels adapter checked
against hand-worked retrieval metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.data.datasets.gldv2 import (
    GLDv2Retrieval,
    GLDv2Train,
    category_name,
    hierarchical_solution_labels,
    image_path,
    load_retrieval_split,
    read_retrieval_solution,
    solution_labels,
)
from common.data.errors import DataFileError, DatasetNotFoundError
from common.metrics.relevance import shared_levels
from common.metrics.retrieval import evaluate_retrieval
from tests.helpers.gldv2_files import INDEX, TRAIN, make_gldv2


@pytest.fixture
def gld(tmp_path):
    load_retrieval_split.cache_clear()
    return make_gldv2(tmp_path / "gldv2")


def test_category_name_and_image_path():
    assert category_name("http://commons.wikimedia.org/wiki/Category:St._Oswald%27s_Church,_Dean") == (
        "St. Oswald's Church, Dean"
    )
    assert category_name("https://commons.wikimedia.org/wiki/Category:Tower__Bridge ") == "Tower Bridge"
    assert image_path("/d/train", "0123456789abcdef").as_posix() == "/d/train/0/1/2/0123456789abcdef.jpg"
    with pytest.raises(ValueError, match="too short"):
        image_path("/d", "ab")


def test_train_landmarks_only(gld):
    ds = GLDv2Train(gld)
    # train_clean order: landmark 7 (3 images), 3 (2), 12 (2), 40 (1); labels = rank of the landmark id
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 2, 2, 3]
    assert ds.class_ids[0].tolist() == [3, 7, 12, 40]
    assert ds.image_ids[:3] == TRAIN[7][1]
    assert ds.paths[0].endswith("train/a/0/0/a0000001.jpg")
    item = ds[3]
    assert item["index"] == 3 and item["label"].item() == 0 and item["image"].size == (8, 6)
    assert ds.num_dropped_images == 0


def test_train_with_published_hierarchy(gld):
    ds = GLDv2Train(gld, hierarchy="train_label_to_hierarchical.csv")
    # landmark 40 has no row and 12 an empty hierarchical_label: both left out and counted
    assert ds.num_dropped_landmarks == 2 and ds.num_dropped_images == 3
    assert ds.labels.shape == (5, 2)
    assert ds.class_ids[1].tolist() == ["castle", "religious building"]
    assert ds.labels.tolist() == [[1, 0]] * 3 + [[0, 1]] * 2
    three = GLDv2Train(
        gld,
        hierarchy=gld / "train_label_to_hierarchical.csv",
        hierarchy_columns=["supercategory", "natural_or_human_made"],
    )
    assert three.labels.shape == (7, 3) and three.num_dropped_landmarks == 1
    assert three.class_ids[2].tolist() == ["human-made"]
    dropped = GLDv2Train(gld, hierarchy="train_label_to_hierarchical.csv", drop_labels=["castle"])
    assert len(dropped) == 2 and dropped.num_dropped_landmarks == 3


def test_errors_name_the_file_and_target(gld, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data-gldv2"):
        GLDv2Train(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="hgldv2/train_hierarchy.csv"):
        GLDv2Train(gld, hierarchy="hgldv2/train_hierarchy.csv")
    with pytest.raises(ValueError, match="no column"):
        GLDv2Train(gld, hierarchy="train_label_to_hierarchical.csv", hierarchy_columns=["cluster"])
    (gld / "retrieval_solution_v2.1.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="retrieval_solution_v2.1.csv"):
        GLDv2Retrieval(gld, "query")
    (gld / "train_clean.csv").write_text("landmark,imgs\n1,a\n")
    with pytest.raises(DataFileError, match=r"no column\(s\) \['landmark_id', 'images'\].*make data-gldv2"):
        GLDv2Train(gld)
    (gld / "train_clean.csv").write_text("landmark_id,images\n1,a\nx2,b\n")
    with pytest.raises(DataFileError, match="data row 2, column 'landmark_id': 'x2' is not an integer"):
        GLDv2Train(gld)
    (gld / "train_clean.csv").write_text("landmark_id,images\n1,a\n1,b\n")
    with pytest.raises(DataFileError, match="listed twice"):
        GLDv2Train(gld)
    with pytest.raises(ValueError, match="split"):
        GLDv2Retrieval(gld, "gallery")
    make_gldv2(tmp_path / "noimg", images=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        GLDv2Train(tmp_path / "noimg", check_files=True)


def test_solution_with_unknown_index_id(gld):
    text = (gld / "retrieval_solution_v2.1.csv").read_text().replace("e0000003", "e9999999")
    (gld / "retrieval_solution_v2.1.csv").write_text(text)
    with pytest.raises(ValueError, match="e9999999"):
        GLDv2Retrieval(gld, "query")


def test_read_solution_usage(gld):
    ids, matches = read_retrieval_solution(gld / "retrieval_solution_v2.1.csv", "public")
    assert ids == ["f0000001", "f0000002"] and matches == [["e0000001", "e0000002"], None]
    with pytest.raises(ValueError, match="usage"):
        read_retrieval_solution(gld / "retrieval_solution_v2.1.csv", "hidden")


def test_solution_labels_disjoint_sets_are_flat():
    q, g = solution_labels([[0, 1], [2], [1, 0]], num_index=5)
    assert q.tolist() == [0, 1, 0]  # the first and third queries have the same relevant set
    assert g.tolist() == [0, 0, 1, 2, 2]  # items 3, 4 relevant to nobody: class 2, which no query has


def test_solution_labels_overlapping_sets_are_multilabel():
    q, g = solution_labels([[0, 1], [1, 2], [2, 1]], num_index=4)
    assert q.dtype == np.bool_ and q.tolist() == [[True, False], [False, True], [False, True]]
    assert g.tolist() == [[True, False], [True, True], [False, True], [False, False]]
    with pytest.raises(ValueError, match="no relevant item"):
        solution_labels([[0], []], num_index=2)
    with pytest.raises(ValueError, match="outside"):
        solution_labels([[5]], num_index=2)


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


@pytest.mark.parametrize("overlap", [False, True])
def test_adapter_reproduces_hand_worked_metrics(overlap):
    """Queries at 0 and 50 degrees, index items at 10, 20, 30, 40 degrees (so q0 ranks i0 i1 i2 i3, q1 i3 i2 i1 i0).

    q0 relevant {i1, i3}: positions 2 and 4, AP = (1/2 + 2/4) / 2 = 1/2, R@1 = 0, MAP@R = (1/2) / 2 = 1/4.
    q1 relevant {i1, i2} (overlaps q0's set): positions 2 and 3, AP = (1/2 + 2/3) / 2 = 7/12, MAP@R = 1/4;
    q1 relevant {i0, i2} (disjoint): positions 2 and 4, AP = 1/2, MAP@R = 1/4.
    """
    matches = [[1, 3], [1, 2] if overlap else [0, 2]]
    q_lab, g_lab = solution_labels(matches, num_index=4)
    assert (q_lab.dtype == np.bool_) == overlap
    emb = torch.tensor([_unit(0), _unit(50)] + [_unit(d) for d in (10, 20, 30, 40)], dtype=torch.float64)
    labels = torch.as_tensor(np.concatenate([q_lab, g_lab]))
    res = evaluate_retrieval(
        emb,
        labels,
        query_idx=torch.arange(2),
        gallery_idx=torch.arange(2, 6),
        exclude_self=False,
        metrics=("map", "recall", "map_at_r"),
        recall_at=(1, 2),
    )
    ap1 = 7 / 12 if overlap else 1 / 2
    assert res["map"] == pytest.approx((1 / 2 + ap1) / 2)
    assert res["recall@1"] == 0.0 and res["recall@2"] == 1.0
    assert res["map@r"] == pytest.approx(1 / 4)
    assert res["num_skipped_queries"] == 0


def test_adapter_matches_brute_force_on_random_ground_truth():
    """Random relevant sets (overlapping), random embeddings: per-query AP from the sets directly."""
    rng = np.random.default_rng(0)
    n_q, n_i = 7, 40
    matches = [sorted(rng.choice(n_i, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(n_q)]
    matches[3] = list(matches[1])  # two queries with the same set
    q_lab, g_lab = solution_labels(matches, num_index=n_i)
    emb = torch.as_tensor(rng.normal(size=(n_q + n_i, 5)))
    labels = torch.as_tensor(np.concatenate([q_lab, g_lab]))
    res = evaluate_retrieval(
        emb, labels, query_idx=torch.arange(n_q), gallery_idx=torch.arange(n_q, n_q + n_i), exclude_self=False,
        metrics=("map",),
    )  # fmt: skip
    e = torch.nn.functional.normalize(emb, dim=1)
    aps = []
    for q, rel in enumerate(matches):
        order = torch.argsort(e[n_q:] @ e[q], descending=True).tolist()
        hits = np.cumsum([j in rel for j in order])
        aps.append(np.mean([hits[p] / (p + 1) for p, j in enumerate(order) if j in rel]))
    assert res["map"] == pytest.approx(float(np.mean(aps)))


def test_hierarchical_solution_labels_hand_worked():
    coarse = [("castle",), ("castle",), ("bridge",), None, ("bridge",), ("castle",)]
    sol = hierarchical_solution_labels([[0, 1], [2], [3, 4]], coarse)
    t = shared_levels(torch.as_tensor(sol.query_labels), torch.as_tensor(sol.index_labels))
    assert t.tolist() == [
        [2, 2, 0, 0, 0, 1],  # relevant castle images, then another castle image (i5) at the coarse level
        [0, 0, 2, 0, 0, 0],  # i4 is a bridge but relevant to q2: it takes the coarse label of q2's group
        [0, 0, 0, 2, 2, 0],  # q2's images disagree (unknown / bridge): its group has a coarse label of its own
    ]
    assert sol.num_groups_without_coarse == 1
    lab = np.concatenate([sol.query_labels, sol.index_labels])
    for fine in np.unique(lab[:, 0]):  # a tree: the fine label fixes the coarse one
        assert len(np.unique(lab[lab[:, 0] == fine, 1])) == 1
    with pytest.raises(ValueError, match="overlap"):
        hierarchical_solution_labels([[0, 1], [1]], coarse)


def test_retrieval_split_datasets(gld):
    query, index = GLDv2Retrieval(gld, "query"), GLDv2Retrieval(gld, "index")
    assert query.image_ids == ["f0000001", "f0000003", "f0000004"] and query.num_unmatched_queries == 2
    assert index.image_ids == INDEX and query.num_groups == 2
    assert query.paths[1].endswith("test/f/0/0/f0000003.jpg") and index.paths[0].endswith("index/e/0/0/e0000001.jpg")
    assert query.labels.tolist() == [0, 1, 0] and index.labels.tolist() == [0, 0, 1, 2, 2, 2]
    assert query[0]["label"].item() == 0 and index[5]["image"].size == (8, 6)
    public = GLDv2Retrieval(gld, "query", usage="private")
    assert public.image_ids == ["f0000003", "f0000004"] and public.num_unmatched_queries == 1
    # end to end: embeddings equal to the one-hot of the relevant set -> perfect retrieval
    emb = torch.eye(3, dtype=torch.float64)[torch.cat([query.labels, index.labels])] + 0.01
    res = evaluate_retrieval(
        emb,
        torch.cat([query.labels, index.labels]),
        query_idx=torch.arange(3),
        gallery_idx=torch.arange(3, 9),
        exclude_self=False,
        metrics=("map", "recall"),
        recall_at=(1,),
    )
    assert res["map"] == 1.0 and res["recall@1"] == 1.0


def test_retrieval_split_with_index_hierarchy(gld):
    kw = dict(hierarchy="index_label_to_hierarchical.csv")
    query, index = GLDv2Retrieval(gld, "query", **kw), GLDv2Retrieval(gld, "index", **kw)
    assert query.labels.shape == (3, 2) and index.labels.shape == (6, 2)
    t = shared_levels(query.labels, index.labels)
    # e1, e2 (landmark 501, castle) are q1's and q4's relevant set; e3 (502, bridge) q3's; e4, e5 are churches;
    # e6 is a bridge (502) outside q3's relevant set: relevant at the coarse level only
    assert t.tolist() == [[2, 2, 0, 0, 0, 0], [0, 0, 2, 0, 0, 1], [2, 2, 0, 0, 0, 0]]
    coarse = GLDv2Retrieval(
        gld, "index", hierarchy="index_label_to_hierarchical.csv", hierarchy_columns=["supercategory"]
    )
    assert coarse.num_groups_without_coarse == 0
