"""iNaturalist-2018 with the Smooth-AP retrieval split (Brown et al. 2020), as used by ROADMAP and HAPPIER.

Layout under ``root``::

    root/Inat_dataset_splits/Inaturalist_train_set1.txt   one image path per line, relative to root:
    root/Inat_dataset_splits/Inaturalist_test_set1.txt      train_val2018/<supercategory>/<category_id>/<image>.jpg
    root/train_val2018/...                                the images
    root/train2018.json                                   (only for levels=7) the categories with their taxonomy

Labels (column 0 = finest):

* ``levels=1``: the category id, ``int(path.split('/')[-2])`` (species);
* ``levels=2`` ("iNat-base"): ``[species, supercategory]``, the supercategory being the folder name
  ``path.split('/')[-3]`` mapped to its index among the sorted names of ``supercategories`` (by default the 14
  iNat-2018 supercategories below; the Smooth-AP train split uses 13 of them);
* ``levels=7`` ("iNat-full"): ``[species, genus, family, order, class, phylum, kingdom]`` from ``train2018.json``,
  each rank's names mapped to their index in sorted order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

LAYOUT = """  <root>/Inat_dataset_splits/Inaturalist_{train,test}_set1.txt  (paths: train_val2018/<supercat>/<cat_id>/<img>.jpg)
  <root>/train_val2018/...                                      (images)
  <root>/train2018.json                                         (levels=7 only)"""
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
TAXONOMY_RANKS = ("genus", "family", "order", "class", "phylum", "kingdom")


def read_inat_split(path: str | Path) -> list[str]:
    """Image paths (relative to the dataset root) listed in a Smooth-AP split file."""
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def path_labels(rel_paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(category id from ``path[-2]`` [N], supercategory name from ``path[-3]``)."""
    parts = [p.replace("\\", "/").split("/") for p in rel_paths]
    bad = [p for p in parts if len(p) < 3 or not p[-2].isdigit()]
    if bad:
        raise ValueError(f"paths must look like train_val2018/<supercat>/<cat_id>/<img>.jpg, got {'/'.join(bad[0])}")
    return np.array([int(p[-2]) for p in parts], dtype=np.int64), [p[-3] for p in parts]


class INaturalist2018(ImageListDataset):
    """iNaturalist-2018 Smooth-AP ``split`` with ``levels`` in {1, 2, 7} (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 1,
        transform: Callable | None = None,
        on_error: str = "raise",
        supercategories: Sequence[str] = SUPERCATEGORIES,
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        if levels not in (1, 2, 7):
            raise ValueError(f"iNaturalist levels must be 1, 2 (base) or 7 (full), got {levels}")
        ds = "iNaturalist-2018 (Smooth-AP split)"
        root = require_path(root, dataset=ds, layout=LAYOUT, make_target="data-inat")
        split_file = require_path(
            root / "Inat_dataset_splits" / SPLIT_FILES[split], dataset=ds, layout=LAYOUT, make_target="data-inat"
        )
        rel = read_inat_split(split_file)
        species, supers = path_labels(rel)
        if levels == 1:
            labels = species
        elif levels == 2:
            index = {name: i for i, name in enumerate(sorted(supercategories))}
            unknown = sorted(set(supers) - set(index))
            if unknown:
                raise ValueError(f"unknown supercategories {unknown}; pass them in `supercategories`")
            labels = np.stack([species, np.array([index[s] for s in supers], dtype=np.int64)], axis=1)
        else:
            meta = require_path(root / "train2018.json", dataset=ds, layout=LAYOUT, make_target="data-inat")
            labels = np.concatenate([species[:, None], self._taxonomy(meta, species)], axis=1)
        super().__init__([root / p for p in rel], labels, transform=transform, on_error=on_error)
        self.split, self.levels = split, levels

    @staticmethod
    def _taxonomy(meta_path: Path, species: np.ndarray) -> np.ndarray:
        """``[N, 6]`` indices of genus .. kingdom of each species, names indexed in sorted order per rank."""
        categories = {c["id"]: c for c in json.loads(meta_path.read_text())["categories"]}
        missing = sorted(set(species.tolist()) - set(categories))
        if missing:
            raise ValueError(f"category ids {missing[:5]} are not in {meta_path}")
        cols = []
        for rank in TAXONOMY_RANKS:
            names = sorted({str(c[rank]) for c in categories.values()})
            idx = {n: i for i, n in enumerate(names)}
            cols.append([idx[str(categories[int(s)][rank])] for s in species])
        return np.array(cols, dtype=np.int64).T
