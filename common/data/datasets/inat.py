"""iNaturalist-2018 with the Smooth-AP retrieval split (Brown et al. 2020), as used by ROADMAP and HAPPIER.

This module holds the one iNat-2018 split reader (:func:`read_inat_split`), path parser (:func:`path_labels`) and
taxonomy reader (:func:`load_inat_taxonomy`, :func:`inat_taxonomy_ids`); ``inat_hierarchy.py`` (HAPPIER's
``INatHierarchyDataset``) uses them too.

Layout under ``root``::

    root/Inat_dataset_splits/Inaturalist_train_set1.txt   one image path per line, relative to root:
    root/Inat_dataset_splits/Inaturalist_test_set1.txt      train_val2018/<supercategory>/<category_id>/<image>.jpg
    root/train_val2018/...                                the images
    root/train2018.json                                   (only for levels=7) the categories with their taxonomy

Original ids (column 0 = finest), kept in :attr:`INaturalist2018.original_labels`:

* ``levels=1``: the category id, ``int(path.split('/')[-2])`` (species, 0..8141);
* ``levels=2`` ("iNat-base"): ``[species, supercategory]``, the supercategory being the folder name
  ``path.split('/')[-3]`` mapped to its index among the sorted names of ``supercategories`` (by default the 14
  iNat-2018 supercategories below; the Smooth-AP train split uses 13 of them);
* ``levels=7`` ("iNat-full"): ``[species, genus, family, order, class, phylum, kingdom]`` from ``train2018.json``:
  a taxon of rank r is its lineage ``(name at r, name at r+1, ..., kingdom)``, and its id is the index of that
  lineage among the sorted lineages of rank r over *all* categories of the file (so ids agree between splits, and
  equal the index of the sorted names when names are unique within a rank). Keying by lineage keeps two homonym
  taxa under different parents apart, so the labels always form a tree.

Labels: a split holds a subset of the 8,142 species, so the original ids are sparse. Each column is renumbered to
``0..n_c-1`` within the split in increasing order of the original ids (:func:`~common.data.datasets.base.remap_labels`),
as proxy-based losses need; ``class_ids[c][labels[:, c]] == original_labels[:, c]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data.datasets.base import SplitFileDataset, remap_labels
from common.data.errors import data_file_error, int_field, require_path

LAYOUT = """  <root>/Inat_dataset_splits/Inaturalist_{train,test}_set1.txt  (paths: train_val2018/<supercat>/<cat_id>/<img>.jpg)
  <root>/train_val2018/...                                      (images)
  <root>/train2018.json                                         (levels=7 only)"""
MAKE_TARGET = "data-inat"
NUM_CATEGORIES = 8142  # iNaturalist-2018 species, ids 0..8141
SPLIT_FILES = {"train": "Inaturalist_train_set1.txt", "test": "Inaturalist_test_set1.txt"}
SUPERCATEGORIES = (
    "Actinopterygii",
    "Amphibia",
    "Animalia",
    "Arachnida",
    "Aves",
    "Bacteria",
    "Chromista",
    "Fungi",
    "Insecta",
    "Mammalia",
    "Mollusca",
    "Plantae",
    "Protozoa",
    "Reptilia",
)
INAT_LEVELS: tuple[str, ...] = ("species", "genus", "family", "order", "class", "phylum", "kingdom")
TAXONOMY_RANKS = INAT_LEVELS[1:]


def read_inat_split(path: str | Path) -> list[str]:
    """Image paths (relative to the dataset root) listed in a Smooth-AP split file, blank lines skipped."""
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def _line_of(path: str | Path, entry: str) -> str:
    """ "line N" of the first line of ``path`` that holds ``entry`` (for error messages)."""
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip() == entry:
            return f"line {n}"
    return f"entry {entry!r}"


def path_labels(rel_paths: Sequence[str], split_file: str | Path | None = None) -> tuple[np.ndarray, list[str]]:
    """(category id from ``path[-2]`` int64 ``[N]``, supercategory name from ``path[-3]``) of each split line.

    Category ids must be iNat-2018's, ``0..8141``. Errors name ``split_file`` and the line when it is given.
    """
    parts = [p.replace("\\", "/").split("/") for p in rel_paths]
    bad = next((k for k, p in enumerate(parts) if len(p) < 3 or not p[-2].isdigit()), None)
    problem = None
    if bad is not None:
        problem = (
            f"'{rel_paths[bad]}' does not look like train_val2018/<supercat>/<cat_id>/<img>.jpg (the parent folder "
            f"must be the integer category id); use the Smooth-AP Inaturalist_*_set1.txt files"
        )
    else:
        species = np.array([int(p[-2]) for p in parts], dtype=np.int64)
        out = np.flatnonzero(species >= NUM_CATEGORIES)
        if out.size:
            bad = int(out[0])
            problem = (
                f"category id {species[bad]} in '{rel_paths[bad]}' is outside iNat-2018's 0..{NUM_CATEGORIES - 1} "
                f"({out.size} such lines)"
            )
    if problem is not None:
        if split_file is None:
            raise ValueError(f"split line {problem}")
        raise data_file_error(split_file, _line_of(split_file, rel_paths[bad]), problem, MAKE_TARGET)
    return species, [p[-3] for p in parts]


def load_inat_taxonomy(
    json_path: str | Path,
    *,
    dataset: str = "iNaturalist-2018 annotations",
    layout: str = LAYOUT,
) -> dict[int, tuple[str, ...]]:
    """``{category id: (species, genus, ..., kingdom) names}`` from the ``categories`` of ``train2018.json``.

    The species "name" is the category id itself (as in HAPPIER); the other levels are the taxon names.
    ``dataset`` and ``layout`` word the error raised when the file is missing.
    """
    path = require_path(json_path, dataset=dataset, layout=layout, make_target=MAKE_TARGET)
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise data_file_error(path, "reading", f"not valid JSON ({e})", MAKE_TARGET) from e
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories or not isinstance(categories, list):
        raise data_file_error(
            path, "field 'categories'", "missing or empty; use the official train2018.json", MAKE_TARGET
        )
    taxonomy = {}
    for k, cat in enumerate(categories):
        where = f"categories[{k}]"
        missing = [f for f in ("id", *TAXONOMY_RANKS) if not isinstance(cat, dict) or f not in cat]
        if missing:
            raise data_file_error(path, where, f"lacks the fields {missing}", MAKE_TARGET)
        cid = int_field(cat["id"], path=path, where=f"{where}.id", make_target=MAKE_TARGET)
        if cid in taxonomy:
            raise data_file_error(path, f"{where}.id", f"category id {cid} appears twice", MAKE_TARGET)
        taxonomy[cid] = (str(cid), *(str(cat[f]) for f in TAXONOMY_RANKS))
    return taxonomy


def taxonomy_ids(taxonomy: Mapping[int, Sequence[str]]) -> dict[int, tuple[int, ...]]:
    """``{category id: (category id, genus id, ..., kingdom id)}``, the ids of the module docstring.

    The id of the rank-r taxon of a category is the index of its lineage ``names[r:]`` (finest first) among the
    sorted distinct lineages of rank r over all categories of ``taxonomy``.
    """
    rows: dict[int, list[int]] = {cid: [int(cid)] for cid in taxonomy}
    for r in range(1, len(INAT_LEVELS)):
        lineages = {cid: tuple(names[r:]) for cid, names in taxonomy.items()}
        index = {lin: i for i, lin in enumerate(sorted(set(lineages.values())))}
        for cid, lin in lineages.items():
            rows[cid].append(index[lin])
    return {cid: tuple(row) for cid, row in rows.items()}


def inat_taxonomy_ids(
    species: np.ndarray, taxonomy: Mapping[int, Sequence[str]], rel_paths: Sequence[str] | None = None
) -> np.ndarray:
    """int64 ``[N, 7]`` original ids ``[species, genus, ..., kingdom]`` (:func:`taxonomy_ids`) of category ids ``[N]``.

    ``rel_paths`` (the split lines of ``species``) only serve to name an offending line in the error.
    """
    ids = taxonomy_ids(taxonomy)
    missing = sorted(set(species.tolist()) - set(ids))
    if missing:
        where = ""
        if rel_paths is not None:
            where = f" (e.g. from '{rel_paths[int(np.flatnonzero(species == missing[0])[0])]}')"
        raise ValueError(
            f"category ids {missing[:5]}{where} are not in train2018.json's categories; the split files and "
            f"train2018.json must come from the same iNaturalist-2018 release"
        )
    if len(species) == 0:
        return np.zeros((0, len(INAT_LEVELS)), dtype=np.int64)
    return np.array([ids[int(s)] for s in species], dtype=np.int64)


class SmoothAPSplitDataset(SplitFileDataset):
    """An iNaturalist-2018 Smooth-AP split whose label columns are renumbered within the split.

    :meth:`original_ids` gives the official ids of each image from its split line; every column is then renumbered
    to ``0..n_c-1`` (:func:`~common.data.datasets.base.remap_labels`).

    Attributes:
        labels: int64 ``[N]`` (levels=1) or ``[N, levels]``, each column renumbered to ``0..n_c-1``.
        original_labels: int64, same shape: the official ids (category id, supercategory or taxon index).
        class_ids: per column, the sorted original ids ``[n_c]``; ``class_ids[c][k]`` is the id of label ``k``.
    """

    LAYOUT, MAKE_TARGET = LAYOUT, MAKE_TARGET
    SPLIT_FILES = {split: f"Inat_dataset_splits/{name}" for split, name in SPLIT_FILES.items()}

    def read(self, list_file: Path) -> tuple[list[str], np.ndarray]:
        rel = read_inat_split(list_file)
        species, supers = path_labels(rel, list_file)
        original = self.original_ids(rel, species, supers)
        labels, self.class_ids = remap_labels(original)
        self.original_labels = torch.as_tensor(original, dtype=torch.long)
        return rel, labels

    def original_ids(self, rel_paths: list[str], species: np.ndarray, supers: list[str]) -> np.ndarray:
        """int64 ``[N]`` or ``[N, levels]`` official ids of the images of ``rel_paths`` (category ids ``species``,
        supercategory folder names ``supers``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement original_ids")


class INaturalist2018(SmoothAPSplitDataset):
    """iNaturalist-2018 Smooth-AP ``split`` with ``levels`` in {1, 2, 7} (see the module docstring).

    ``supercategories``: the names that ``levels=2`` numbers in sorted order. The other arguments and the
    attributes are those of :class:`SmoothAPSplitDataset`.
    """

    DATASET = "iNaturalist-2018 (Smooth-AP split)"
    LEVELS = {1: "species", 2: "species, supercategory", 7: "species, genus, ..., kingdom"}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 1,
        *,
        supercategories: Sequence[str] = SUPERCATEGORIES,
        **options: Any,
    ) -> None:
        self.supercategories = tuple(supercategories)
        super().__init__(root, split, levels, **options)

    def original_ids(self, rel_paths: list[str], species: np.ndarray, supers: list[str]) -> np.ndarray:
        if self.levels == 1:
            return species
        if self.levels == 2:
            index = {name: i for i, name in enumerate(sorted(self.supercategories))}
            unknown = sorted(set(supers) - set(index))
            if unknown:
                raise ValueError(f"unknown supercategories {unknown}; pass them in `supercategories`")
            return np.stack([species, np.array([index[s] for s in supers], dtype=np.int64)], axis=1)
        taxonomy = load_inat_taxonomy(self.root / "train2018.json", dataset=self.DATASET, layout=self.LAYOUT)
        return inat_taxonomy_ids(species, taxonomy, rel_paths)
