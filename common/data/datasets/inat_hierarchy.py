"""iNaturalist-2018 with its full 7-level taxonomy ("iNat-full" in HAPPIER), from the official files.

Layout expected under ``root``::

    root/
      train2018.json                                  (official annotations; only "categories" is read)
      Inat_dataset_splits/Inaturalist_train_set1.txt  (Smooth-AP retrieval split, one image path per line)
      Inat_dataset_splits/Inaturalist_test_set1.txt
      train_val2018/<supercategory>/<category_id>/<image>.jpg

Each split line is a path relative to ``root`` whose parent folder is the iNat category id. The label row of an image
is ``[species, genus, family, order, class, phylum, kingdom]`` (column 0 = finest), looked up in the
``categories`` of ``train2018.json`` (fields ``id``, ``genus``, ``family``, ``order``, ``class``, ``phylum``,
``kingdom``). Each level is keyed by its full path from the kingdom down, so two taxa with the same name under
different parents stay different and the labels always form a tree; then every column is relabelled to
``0..n-1`` within the split (sorted by that key). With unique names per level this equals HAPPIER's labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

INAT_LEVELS: tuple[str, ...] = ("species", "genus", "family", "order", "class", "phylum", "kingdom")
INAT_LAYOUT = """  <root>/train2018.json
  <root>/Inat_dataset_splits/Inaturalist_{train,test}_set1.txt
  <root>/train_val2018/<supercategory>/<category_id>/<image>.jpg"""
MAKE_TARGET = "data-inat"


def load_inat_taxonomy(json_path: str | Path) -> dict[int, tuple[str, ...]]:
    """``{category id: (species, genus, ..., kingdom) names}`` from the ``categories`` of ``train2018.json``.

    The species "name" is the category id itself (as in HAPPIER); the other levels are the taxon names.
    """
    path = require_path(json_path, dataset="iNaturalist-2018 annotations", layout=INAT_LAYOUT, make_target=MAKE_TARGET)
    with open(path) as f:
        categories = json.load(f).get("categories")
    if not categories:
        raise ValueError(f"'{path}' has no 'categories' list; use the official train2018.json.")
    taxonomy = {}
    for cat in categories:
        missing = [k for k in ("id", *INAT_LEVELS[1:]) if k not in cat]
        if missing:
            raise ValueError(f"category {cat.get('id')} in '{path}' lacks the fields {missing}")
        taxonomy[int(cat["id"])] = (str(cat["id"]), *(str(cat[k]) for k in INAT_LEVELS[1:]))
    return taxonomy


def read_split(root: str | Path, split: str) -> list[str]:
    """Image paths (relative to ``root``) of a Smooth-AP split file, blank lines skipped."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = require_path(
        Path(root) / "Inat_dataset_splits" / f"Inaturalist_{split}_set1.txt",
        dataset="iNaturalist-2018 retrieval split",
        layout=INAT_LAYOUT,
        make_target=MAKE_TARGET,
    )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def relabel_columns(keys: Sequence[Sequence[object]] | np.ndarray) -> np.ndarray:
    """int64 ``[N, L]``: each column's keys (ints or strings) mapped to ``0..n-1`` in sorted order."""
    arr = np.asarray(keys)
    out = np.empty(arr.shape, dtype=np.int64)
    for c in range(arr.shape[1]):
        _, inverse = np.unique(arr[:, c], return_inverse=True)
        out[:, c] = inverse.reshape(-1)
    return out


def inat_hierarchy_labels(rel_paths: Sequence[str], taxonomy: dict[int, tuple[str, ...]]) -> np.ndarray:
    """int64 ``[N, 7]`` labels of the images (column 0 = species), relabelled per level to ``0..n-1``."""
    keys = []
    for p in rel_paths:
        parts = p.replace("\\", "/").split("/")
        try:
            cat = int(parts[-2])
        except (IndexError, ValueError):
            raise ValueError(
                f"split line '{p}' does not look like train_val2018/<supercategory>/<category_id>/<image>.jpg"
            ) from None
        if cat not in taxonomy:
            raise ValueError(f"category id {cat} (from '{p}') is not in train2018.json's categories")
        names = taxonomy[cat]  # finest first
        # full path from the kingdom down to each level, finest first
        keys.append(["/".join(reversed(names[level:])) for level in range(len(INAT_LEVELS))])
    return relabel_columns(keys)


class INatHierarchyDataset(ImageListDataset):
    """iNaturalist-2018 retrieval split with 7-level labels ``[N, 7]`` (species ... kingdom).

    Args:
        root: the folder of the layout above.
        split: "train" or "test".
        levels: keep the first ``levels`` columns (7 = iNat-full).
        transform, on_error: see :class:`~common.data.datasets.base.ImageListDataset`.
        check_files: verify that every image exists (off by default: 461k stat calls).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 7,
        transform: Callable | None = None,
        on_error: str = "raise",
        check_files: bool = False,
    ) -> None:
        if not 1 <= levels <= len(INAT_LEVELS):
            raise ValueError(f"levels must be in 1..{len(INAT_LEVELS)}, got {levels}")
        root = require_path(root, dataset="iNaturalist-2018", layout=INAT_LAYOUT, make_target=MAKE_TARGET)
        rel = read_split(root, split)
        taxonomy = load_inat_taxonomy(root / "train2018.json")
        labels = inat_hierarchy_labels(rel, taxonomy)[:, :levels]
        paths = [root / p for p in rel]
        if check_files:
            for p in paths:
                require_path(p, dataset="iNaturalist-2018 image", layout=INAT_LAYOUT, make_target=MAKE_TARGET)
        self.root, self.split, self.level_names = root, split, INAT_LEVELS[:levels]
        super().__init__(paths, labels, transform=transform, on_error=on_error)
