"""CUB-200-2011 (Wah et al. 2011), zero-shot retrieval split: the first 100 classes train, the last 100 test.

Layout under ``root`` (the unpacked ``CUB_200_2011`` folder)::

    root/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg ...

Classes are the folders of ``images/`` sorted by name (as torchvision's ImageFolder); the label of an image is the
index of its folder (0..199), so test labels are 100..199. ``levels=3`` gives ``[N, 3]`` labels
``[species, family, order]`` from the bird taxonomy of :mod:`common.data.datasets.cub_taxonomy` (the TPAMI
hierarchical rows); it needs the 200 standard class folders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.datasets.cub_taxonomy import FAMILY, ORDER
from common.data.errors import require_path

LAYOUT = "  <root>/images/<NNN.Class_Name>/<image>.jpg   (200 class folders; first 100 = train, last 100 = test)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class CUB200(ImageListDataset):
    """CUB-200-2011 ``split`` "train" (classes 0-99) or "test" (classes 100-199); labels ``[N]`` (``levels=1``) or
    ``[N, 3]`` = ``[species, family, order]`` (``levels=3``)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        on_error: str = "raise",
        num_train_classes: int = 100,
        levels: int = 1,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if levels not in (1, 3):
            raise ValueError(f"CUB has levels 1 (species) or 3 (species, family, order), got {levels}")
        root = require_path(root, dataset="CUB-200-2011", layout=LAYOUT, make_target="data-cub")
        images = require_path(root / "images", dataset="CUB-200-2011", layout=LAYOUT, make_target="data-cub")
        classes = sorted(d.name for d in images.iterdir() if d.is_dir())
        if len(classes) <= num_train_classes:
            raise ValueError(
                f"{images} has {len(classes)} class folders; expected more than {num_train_classes} "
                f"(200 for CUB-200-2011)"
            )
        chosen = range(num_train_classes) if split == "train" else range(num_train_classes, len(classes))
        paths, labels = [], []
        for c in chosen:
            files = sorted(
                f for f in (images / classes[c]).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            paths += files
            labels += [c] * len(files)
        if levels == 3:
            if len(classes) != len(FAMILY):
                raise ValueError(
                    f"levels=3 needs the {len(FAMILY)} class folders of CUB-200-2011 (the taxonomy is per class), "
                    f"{images} has {len(classes)}; use levels=1"
                )
            labels = np.stack([labels, np.asarray(FAMILY)[labels], np.asarray(ORDER)[labels]], axis=1)
        super().__init__(paths, labels, transform=transform, on_error=on_error)
        self.split, self.classes, self.levels = split, [classes[c] for c in chosen], levels
