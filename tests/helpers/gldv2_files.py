"""A tiny Google Landmarks v2 tree in the official layout (CSV metadata + JPEG images by id prefix), for the reader
and the H-GLDv2 builder tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# train landmarks: id -> (Wikimedia category URL, image ids, colour of their images)
TRAIN = {
    7: ("http://commons.wikimedia.org/wiki/Category:Castle_Howard", ["a0000001", "a0000002", "a1000003"], (200, 0, 0)),
    3: (
        "https://commons.wikimedia.org/wiki/Category:St._Oswald%27s_Church,_Dean",
        ["b0000001", "b0000002"],
        (0, 200, 0),
    ),
    12: ("http://commons.wikimedia.org/wiki/Category:Tower_Bridge", ["c0000001", "c0000002"], (0, 0, 200)),
    40: ("http://commons.wikimedia.org/wiki/Category:Zzyzx_Qwerty", ["d0000001"], (160, 100, 0)),
}
# a landmark with a category but no clean images (the full train set has more landmarks than train_clean.csv)
TRAIN_ONLY_CATEGORY = {99: "http://commons.wikimedia.org/wiki/Category:Unused_Landmark"}
# published-style hierarchy: landmark 40 has no row, landmark 12 an empty hierarchical_label
TRAIN_HIERARCHY = [
    (7, "castle", "castle", "human-made"),
    (3, "church building", "religious building", "human-made"),
    (12, "bridge", "", "human-made"),
]

INDEX = ["e0000001", "e0000002", "e0000003", "e0000004", "e0000005", "e0000006"]
INDEX_LANDMARK = {
    "e0000001": 501,
    "e0000002": 501,
    "e0000003": 502,
    "e0000004": 503,
    "e0000005": 503,
    "e0000006": 502,
}
INDEX_CATEGORY = {
    501: "http://commons.wikimedia.org/wiki/Category:Castle_Howard",
    502: "http://commons.wikimedia.org/wiki/Category:Old_Bridge",
    503: "http://commons.wikimedia.org/wiki/Category:Some_Church",
}
INDEX_HIERARCHY = [(501, "castle", "castle"), (502, "bridge", "bridge"), (503, "church", "religious building")]
TEST = ["f0000001", "f0000002", "f0000003", "f0000004", "f0000005"]
# test id -> (relevant index ids or None, Usage)
SOLUTION = {
    "f0000001": ("e0000001 e0000002", "Public"),
    "f0000002": (None, "Public"),
    "f0000003": ("e0000003", "Private"),
    "f0000004": ("e0000001 e0000002", "Private"),
    "f0000005": (None, "Private"),
}


def _csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _jpeg(folder: Path, image_id: str, colour=(90, 90, 90)) -> None:
    p = folder / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), colour, dtype=np.uint8)).save(p, format="JPEG")


def make_gldv2(root: Path, images: bool = True) -> Path:
    """Write the tiny GLDv2 tree under ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    _csv(root / "train_clean.csv", ["landmark_id", "images"], [(k, " ".join(v[1])) for k, v in TRAIN.items()])
    cats = [(k, v[0]) for k, v in TRAIN.items()] + list(TRAIN_ONLY_CATEGORY.items())
    _csv(root / "train_label_to_category.csv", ["landmark_id", "category"], cats)
    _csv(
        root / "train_label_to_hierarchical.csv",
        ["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"],
        [(lid, TRAIN[lid][0], sup, hier, nat) for lid, sup, hier, nat in TRAIN_HIERARCHY],
    )
    _csv(root / "index.csv", ["id"], [(i,) for i in INDEX])
    _csv(root / "index_image_to_landmark.csv", ["id", "landmark_id"], list(INDEX_LANDMARK.items()))
    _csv(root / "index_label_to_category.csv", ["landmark_id", "category"], list(INDEX_CATEGORY.items()))
    _csv(
        root / "index_label_to_hierarchical.csv",
        ["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"],
        [(lid, INDEX_CATEGORY[lid], sup, hier, "human-made") for lid, sup, hier in INDEX_HIERARCHY],
    )
    _csv(root / "test.csv", ["id"], [(i,) for i in TEST])
    _csv(
        root / "retrieval_solution_v2.1.csv",
        ["id", "images", "Usage"],
        [(t, m if m is not None else "None", u) for t, (m, u) in SOLUTION.items()],
    )
    if images:
        for _, ids, colour in TRAIN.values():
            for i in ids:
                _jpeg(root / "train", i, colour)
        for i in INDEX:
            _jpeg(root / "index", i)
        for i in TEST:
            _jpeg(root / "test", i)
    return root
