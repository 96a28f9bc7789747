"""Tiny MS-COCO 2017 files in the official layout: ``annotations/instances_{train,val}2017.json`` and the JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# category ids with gaps, listed out of order as a file may list them
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
# image id -> [(category id, iscrowd)]; an empty list is an image without annotation
TRAIN = {5: [(1, 0), (3, 0)], 2: [(1, 0), (1, 0)], 9: [], 11: [(90, 0)], 14: [(3, 1)], 20: [(1, 0), (90, 0)]}
VAL = {30: [(3, 0)], 31: [], 33: [(1, 0), (3, 0), (90, 0)]}


def instances(images: dict[int, list[tuple[int, int]]]) -> dict:
    """An ``instances_*.json`` document for ``images`` (image id -> [(category id, iscrowd)])."""
    anns = [
        {"id": 1000 + 10 * img + k, "image_id": img, "category_id": c, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}
        for img, objs in images.items()
        for k, (c, crowd) in enumerate(objs)
    ]
    return {
        "info": {},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 8, "height": 6} for i in reversed(list(images))],
        "annotations": anns,
        "categories": CATEGORIES,
    }


def make_coco(root: Path, train: dict | None = None, val: dict | None = None) -> Path:
    """Write the two annotation files and one small JPEG per image under ``root``."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, images in (("train2017", train or TRAIN), ("val2017", val or VAL)):
        (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(instances(images)))
        (root / part).mkdir(exist_ok=True)
        for i in images:
            Image.fromarray(np.full((6, 8, 3), i, dtype=np.uint8)).save(root / part / f"{i:012d}.jpg", format="JPEG")
    return root
