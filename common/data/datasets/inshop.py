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

from pathlib import Path

import numpy as np

from common.data.datasets.base import SplitFileDataset
from common.data.errors import data_file_error, int_field

LAYOUT = """  <root>/list_eval_partition.txt   (count, header "image_name item_id evaluation_status", rows)
  <root>/img/<MEN|WOMEN>/<category>/<item_id>/<image>.jpg"""
SPLITS = ("train", "query", "gallery")
MAKE_TARGET = "data-inshop"


def read_inshop_partition(path: str | Path) -> list[tuple[str, str, str]]:
    """Rows ``(image_name, item_id, evaluation_status)`` of ``list_eval_partition.txt``.

    Raises :class:`~common.data.errors.DataFileError` naming the file and the line for a bad count or header line, a
    row without three fields, a status other than train/query/gallery, or an item id that is not ``id_<number>``.
    """
    numbered = [(n, ln.split()) for n, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()]
    if len(numbered) < 2 or numbered[1][1][:3] != ["image_name", "item_id", "evaluation_status"]:
        raise data_file_error(
            path, "lines 1-2", "expected a count line, then 'image_name item_id evaluation_status'", MAKE_TARGET
        )
    count = int_field(numbered[0][1][0], path=path, where=f"line {numbered[0][0]} (count)", make_target=MAKE_TARGET)
    rows = []
    for n, r in numbered[2:]:
        if len(r) != 3 or r[2] not in SPLITS:
            raise data_file_error(
                path, f"line {n}", f"{' '.join(r)!r}; expected '<image> id_<number> <{'|'.join(SPLITS)}>'", MAKE_TARGET
            )
        if not (r[1].startswith("id_") and r[1][3:].isdigit()):
            raise data_file_error(path, f"line {n}, field 'item_id'", f"{r[1]!r} is not id_<number>", MAKE_TARGET)
        rows.append((r[0], r[1], r[2]))
    if count != len(rows):
        raise data_file_error(
            path, f"line {numbered[0][0]} (count)", f"says {count} rows, found {len(rows)}", MAKE_TARGET
        )
    return rows


class InShop(SplitFileDataset):
    """In-Shop ``split`` ("train", "query", "gallery"), ``levels`` 1 ([item]) or 2 ([item, category])."""

    DATASET, LAYOUT, MAKE_TARGET = "In-Shop", LAYOUT, MAKE_TARGET
    SPLIT_FILES = dict.fromkeys(SPLITS, "list_eval_partition.txt")  # one file; its third column names the split
    LEVELS = {1: "item", 2: "item, category"}

    def read(self, list_file: Path) -> tuple[list[str], np.ndarray]:
        rows = read_inshop_partition(list_file)
        category = lambda name: "/".join(name.split("/")[1:3])
        cat_index = {c: i for i, c in enumerate(sorted({category(r[0]) for r in rows}))}
        rows = [r for r in rows if r[2] == self.split]
        items = np.array([int(r[1][3:]) for r in rows], dtype=np.int64)
        if self.levels == 1:
            return [r[0] for r in rows], items
        categories = np.array([cat_index[category(r[0])] for r in rows], dtype=np.int64)
        return [r[0] for r in rows], np.stack([items, categories], axis=1)
