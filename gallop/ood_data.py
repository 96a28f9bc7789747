"""The ImageNet OOD sets of MOS / MCM / GalLoP: iNaturalist, SUN, Places (Huang & Li 2021 subsets) and Textures (DTD).

Layout under ``root`` (``${paths.data_dir}/ood_data``, GalLoP's ``ood_data/``; ``make data-coop`` says where to get
them)::

    iNaturalist/images/*.jpg     SUN/images/*.jpg     Places/images/*.jpg     dtd/images/<texture>/*.jpg

Every image file under the set's folder is read (recursively, sorted). Labels are all ``-1`` (OOD; never used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

IMAGENET_OOD_SETS = {"inaturalist": "iNaturalist", "sun": "SUN", "places": "Places", "textures": "dtd/images"}
_EXT = {".jpg", ".jpeg", ".png"}
LAYOUT = "\n".join(f"  <root>/{v}/**/*.jpg" for v in IMAGENET_OOD_SETS.values())


class ImageNetOOD(ImageListDataset):
    """One ImageNet OOD set (``inaturalist``, ``sun``, ``places`` or ``textures``)."""

    def __init__(self, root: str | Path, name: str, transform: Callable | None = None, on_error: str = "raise") -> None:
        if name not in IMAGENET_OOD_SETS:
            raise ValueError(f"unknown ImageNet OOD set {name!r}; choose one of {sorted(IMAGENET_OOD_SETS)}")
        folder = require_path(Path(root) / IMAGENET_OOD_SETS[name], dataset=f"ImageNet OOD ({name})", layout=LAYOUT,
                              make_target="data-coop")
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in _EXT)
        if not paths:
            raise ValueError(f"{folder}: no images found (expected {LAYOUT.splitlines()[0].strip()} style files)")
        self.name = name
        super().__init__(paths, np.full(len(paths), -1, dtype=np.int64), transform=transform, on_error=on_error)
