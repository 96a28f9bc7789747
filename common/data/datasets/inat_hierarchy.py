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
``kingdom``). The split, path and taxonomy readers are those of :mod:`common.data.datasets.inat` (ROADMAP's
``INaturalist2018(levels=7)`` gives the same labels): a taxon is keyed by its lineage up to the kingdom, so two
taxa with the same name under different parents stay different and the labels always form a tree. Its original id
(kept in :attr:`INatHierarchyDataset.original_labels`) is the category id for the species and the index of the
lineage among all the lineages of its rank in ``train2018.json`` otherwise; every column is then renumbered to
``0..n-1`` within the split in increasing order of those ids. With unique names per rank, the classes are
HAPPIER's (up to their numbering).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.datasets.base import relabel_columns
from common.data.datasets.inat import (
    INAT_LEVELS,
    MAKE_TARGET,
    SPLIT_FILES,
    SmoothAPSplitDataset,
    inat_taxonomy_ids,
    load_inat_taxonomy,
    path_labels,
    read_inat_split,
)
from common.data.errors import require_path

__all__ = [
    "INAT_LAYOUT",
    "INAT_LEVELS",
    "INatHierarchyDataset",
    "inat_hierarchy_labels",
    "load_inat_taxonomy",
    "read_split",
    "relabel_columns",
]

INAT_LAYOUT = """  <root>/train2018.json
  <root>/Inat_dataset_splits/Inaturalist_{train,test}_set1.txt
  <root>/train_val2018/<supercategory>/<category_id>/<image>.jpg"""


def read_split(root: str | Path, split: str) -> list[str]:
    """Image paths (relative to ``root``) of a Smooth-AP split file, blank lines skipped."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = require_path(
        Path(root) / "Inat_dataset_splits" / SPLIT_FILES[split],
        dataset="iNaturalist-2018 retrieval split",
        layout=INAT_LAYOUT,
        make_target=MAKE_TARGET,
    )
    return read_inat_split(path)


def inat_hierarchy_labels(rel_paths: Sequence[str], taxonomy: Mapping[int, Sequence[str]]) -> np.ndarray:
    """int64 ``[N, 7]`` labels of the images (column 0 = species), renumbered per level to ``0..n-1``."""
    species, _ = path_labels(rel_paths)
    return relabel_columns(inat_taxonomy_ids(species, taxonomy, rel_paths))


class INatHierarchyDataset(SmoothAPSplitDataset):
    """iNaturalist-2018 retrieval split with 7-level labels ``[N, 7]`` (species ... kingdom).

    Attributes:
        labels: int64 ``[N, levels]``, each column renumbered to ``0..n_c-1`` within the split.
        original_labels: int64 ``[N, levels]``: category id, then taxon ids (see the module docstring).
        class_ids: per column, the sorted original ids ``[n_c]``; ``class_ids[c][k]`` is the id of label ``k``.

    Args:
        root: the folder of the layout above.
        split: "train" or "test".
        levels: keep the first ``levels`` columns (7 = iNat-full).
        check_files: verify that every image exists (off by default: 461k stat calls).
        options: ``transform``, ``on_error``, see :class:`~common.data.datasets.base.ImageListDataset`.
    """

    DATASET, LAYOUT = "iNaturalist-2018", INAT_LAYOUT
    LEVELS = {k: ", ".join(INAT_LEVELS[:k]) for k in range(1, len(INAT_LEVELS) + 1)}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 7,
        *,
        check_files: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(root, split, levels, **options)
        self.level_names = INAT_LEVELS[:levels]
        if check_files:
            for p in self.paths:
                require_path(p, dataset="iNaturalist-2018 image", layout=INAT_LAYOUT, make_target=MAKE_TARGET)

    def original_ids(self, rel_paths: list[str], species: np.ndarray, supers: list[str]) -> np.ndarray:
        taxonomy = load_inat_taxonomy(self.root / "train2018.json", layout=INAT_LAYOUT)
        return inat_taxonomy_ids(species, taxonomy, rel_paths)[:, : self.levels]
