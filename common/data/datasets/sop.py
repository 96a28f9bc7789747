"""Stanford Online Products (Oh Song et al. 2016) from the official split files.

Layout under ``root`` (the unzipped ``Stanford_Online_Products`` folder)::

    root/
      Ebay_train.txt   Ebay_test.txt       header "image_id class_id super_class_id path", space-separated
      bicycle_final/111085122871_0.JPG ... paths in the files are relative to root

Labels: ``class_id - 1`` (product; 11,318 train classes / 59,551 images) and ``super_class_id - 1`` (12
categories). ``levels=1`` gives ``[N]`` products; ``levels=2`` gives ``[N, 2]`` = ``[product, category]``
(HAPPIER's two-level SOP).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.datasets.base import SplitFileDataset
from common.data.errors import check_label_range, data_file_error, int_field

LAYOUT = """  <root>/Ebay_train.txt, <root>/Ebay_test.txt   (header: image_id class_id super_class_id path)
  <root>/<category>_final/<image>.JPG          (paths relative to <root>)"""
SPLIT_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
MAKE_TARGET = "data-sop"
SOP_SUPER_CLASSES = 12  # bicycle, cabinet, chair, coffee maker, fan, kettle, lamp, mug, sofa, stapler, table, toaster


def read_sop_split(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parse an ``Ebay_*.txt`` file: returns (relative paths, class ids - 1, super-class ids - 1).

    Raises :class:`~common.data.errors.DataFileError` naming the file and the line when the header lacks a column,
    a row has the wrong number of fields or a non-integer id, a class id is below 1 or a super-class id is outside
    1..12.
    """
    numbered = [(n, ln.split()) for n, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()]
    if not numbered:
        raise data_file_error(path, "line 1", "the file is empty", MAKE_TARGET)
    header_line, header = numbered[0]
    need = ("class_id", "super_class_id", "path")
    if not all(h in header for h in need):
        raise data_file_error(
            path, f"header (line {header_line})", f"{header} lacks the columns {need}; not an Ebay_*.txt", MAKE_TARGET
        )
    col = {h: header.index(h) for h in need}
    rows = numbered[1:]
    for n, r in rows:
        if len(r) != len(header):
            raise data_file_error(path, f"line {n}", f"{len(r)} fields, expected {len(header)} ({header})", MAKE_TARGET)
    lines = [n for n, _ in rows]
    ids = {
        h: np.array(
            [
                int_field(r[col[h]], path=path, where=f"line {n}, column '{h}'", make_target=MAKE_TARGET)
                for n, r in rows
            ],
            dtype=np.int64,
        )
        for h in ("class_id", "super_class_id")
    }
    for h, high in (("class_id", np.iinfo(np.int64).max), ("super_class_id", SOP_SUPER_CLASSES)):
        check_label_range(ids[h], 1, high, path=path, field=f"column '{h}'", lines=lines, make_target=MAKE_TARGET)
    return [r[col["path"]] for _, r in rows], ids["class_id"] - 1, ids["super_class_id"] - 1


class StanfordOnlineProducts(SplitFileDataset):
    """SOP ``split`` ("train" or "test") with ``levels`` 1 ([product]) or 2 ([product, category]) labels."""

    DATASET, LAYOUT, MAKE_TARGET, SPLIT_FILES = "Stanford Online Products", LAYOUT, MAKE_TARGET, SPLIT_FILES
    LEVELS = {1: "product", 2: "product, category"}

    def read(self, list_file: Path) -> tuple[list[str], np.ndarray]:
        rel, cls, sup = read_sop_split(list_file)
        return rel, (cls if self.levels == 1 else np.stack([cls, sup], axis=1))
