"""In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016) from ``list_eval_partition.txt``.

Layout under ``root``::

    root/list_eval_partition.txt    line 1: count; line 2: "image_name item_id evaluation_status";
                                    then "img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train"
    root/img/...                    the images (paths in the file are relative to root)

``split`` is "train", "query" or "gallery" (evaluation is query -> gallery). Labels: the item number
``int(item_id[3:])`` (shared by query and gallery), and for ``levels=2`` the category ``WOMEN/Dresses`` (path
parts 1-2) indexed among the sorted category names of the whole file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

LAYOUT = """  <root>/list_eval_partition.txt   (count, header "image_name item_id evaluation_status", rows)
  <root>/img/<MEN|WOMEN>/<category>/<item_id>/<image>.jpg"""
SPLITS = ("train", "query", "gallery")


def read_inshop_partition(path: str | Path) -> list[tuple[str, str, str]]:
    """Rows ``(image_name, item_id, evaluation_status)`` of ``list_eval_partition.txt``."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(lines) < 2 or lines[1][:3] != ["image_name", "item_id", "evaluation_status"]:
        raise ValueError(f"{path}: expected a count line then 'image_name item_id evaluation_status'")
    rows = [tuple(r) for r in lines[2:]]
    bad = [r for r in rows if len(r) != 3 or r[2] not in SPLITS]
    if bad:
        raise ValueError(f"{path}: malformed row {bad[0]}")
    if int(lines[0][0]) != len(rows):
        raise ValueError(f"{path}: first line says {lines[0][0]} rows, found {len(rows)}")
    return rows  # type: ignore[return-value]


class InShop(ImageListDataset):
    """In-Shop ``split`` ("train", "query", "gallery"), ``levels`` 1 ([item]) or 2 ([item, category])."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 1,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if levels not in (1, 2):
            raise ValueError(f"In-Shop has levels 1 (item) or 2 (item, category), got {levels}")
        root = require_path(root, dataset="In-Shop", layout=LAYOUT, make_target="data-inshop")
        part = require_path(
            root / "list_eval_partition.txt", dataset="In-Shop", layout=LAYOUT, make_target="data-inshop"
        )
        rows = read_inshop_partition(part)
        category = lambda name: "/".join(name.split("/")[1:3])
        cat_index = {c: i for i, c in enumerate(sorted({category(r[0]) for r in rows}))}
        rows = [r for r in rows if r[2] == split]
        items = np.array([int(r[1].split("_")[-1]) for r in rows], dtype=np.int64)
        if levels == 1:
            labels = items
        else:
            labels = np.stack([items, np.array([cat_index[category(r[0])] for r in rows], dtype=np.int64)], axis=1)
        super().__init__([root / r[0] for r in rows], labels, transform=transform, on_error=on_error)
        self.split, self.levels = split, levels
