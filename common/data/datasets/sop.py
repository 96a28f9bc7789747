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

from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

LAYOUT = """  <root>/Ebay_train.txt, <root>/Ebay_test.txt   (header: image_id class_id super_class_id path)
  <root>/<category>_final/<image>.JPG          (paths relative to <root>)"""
SPLIT_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}


def read_sop_split(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parse an ``Ebay_*.txt`` file: returns (relative paths, class ids - 1, super-class ids - 1)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    header = lines[0]
    need = ("class_id", "super_class_id", "path")
    if not all(h in header for h in need):
        raise ValueError(f"{path}: header {header} lacks columns {need}; is this an official Ebay_*.txt file?")
    col = {h: header.index(h) for h in need}
    rows = lines[1:]
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:5]} do not have {len(header)} columns")
    paths = [r[col["path"]] for r in rows]
    cls = np.array([int(r[col["class_id"]]) - 1 for r in rows], dtype=np.int64)
    sup = np.array([int(r[col["super_class_id"]]) - 1 for r in rows], dtype=np.int64)
    return paths, cls, sup


class StanfordOnlineProducts(ImageListDataset):
    """SOP ``split`` ("train" or "test") with ``levels`` 1 ([product]) or 2 ([product, category]) labels."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 1,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        if levels not in (1, 2):
            raise ValueError(f"SOP has levels 1 (product) or 2 (product, category), got {levels}")
        root = require_path(root, dataset="Stanford Online Products", layout=LAYOUT, make_target="data-sop")
        split_file = require_path(
            root / SPLIT_FILES[split], dataset="Stanford Online Products", layout=LAYOUT, make_target="data-sop"
        )
        rel, cls, sup = read_sop_split(split_file)
        labels = cls if levels == 1 else np.stack([cls, sup], axis=1)
        super().__init__([root / p for p in rel], labels, transform=transform, on_error=on_error)
        self.split, self.levels = split, levels
