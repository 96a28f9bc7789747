"""ImageNet-1k validation (ID) and the four OOD subsets of Huang & Li (MOS, CVPR 2021) used by HEAT (docs/data.md).

Layouts::

    <root>/imagenet/{train,val}/<wnid>/*.JPEG          (ImageFolder; 1,281,167 / 50,000 images, class = sorted wnid index)
    <root>/ood_data/iNaturalist/images/*.jpg           (10,000)
    <root>/ood_data/SUN/images/*.jpg                   (10,000)
    <root>/ood_data/Places/images/*.jpg                (10,000)
    <root>/ood_data/dtd/images/<class>/*.jpg           (Textures, all 5,640)

These are the archives of ``pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/`` as extracted. OOD items get label -1.
"""

from __future__ import annotations

from pathlib import Path

from common.data.datasets.base import ImageListDataset
from common.data.datasets.ood_folders import list_images
from common.data.errors import require_path

OOD_SUBSETS = {
    "inaturalist": "iNaturalist/images",
    "sun": "SUN/images",
    "places": "Places/images",
    "textures": "dtd/images",
}
LAYOUT = "\n".join(f"  <root>/ood_data/{v}/..." for v in OOD_SUBSETS.values())


class ImageNetFolder(ImageListDataset):
    """ImageNet-1k ``split`` ("train" or "val") as an ImageFolder (``<split>/<wnid>/*.JPEG``, sorted wnids)."""

    split = "val"

    def __init__(self, root, transform=None, on_error: str = "raise", split: str | None = None):
        split = split or self.split
        val = require_path(
            Path(root) / "imagenet" / split,
            dataset=f"ImageNet-1k {split}",
            layout=f"  <root>/imagenet/{split}/<wnid>/*.JPEG",
            make_target="data-imagenet",
        )
        wnids = sorted(p.name for p in val.iterdir() if p.is_dir())
        paths, labels = [], []
        for i, w in enumerate(wnids):
            imgs = list_images(val / w)
            paths += imgs
            labels += [i] * len(imgs)
        self.wnids = wnids
        super().__init__(paths, labels, transform=transform, on_error=on_error)


class ImageNetVal(ImageNetFolder):
    """ImageNet-1k val (50,000 images), ``val/<wnid>/*.JPEG``."""

    split = "val"


class ImageNetTrain(ImageNetFolder):
    """ImageNet-1k train (1,281,167 images), ``train/<wnid>/*.JPEG``."""

    split = "train"


class ImageNetOOD(ImageListDataset):
    """One of the MOS OOD subsets: ``name`` in {"inaturalist", "sun", "places", "textures"}; labels -1."""

    def __init__(self, root, name: str, transform=None, on_error: str = "raise"):
        if name not in OOD_SUBSETS:
            raise ValueError(f"ImageNet OOD subset must be one of {sorted(OOD_SUBSETS)}, got {name!r}")
        folder = require_path(
            Path(root) / "ood_data" / OOD_SUBSETS[name],
            dataset=f"ImageNet OOD '{name}'",
            layout=LAYOUT,
            make_target="data-imagenet-ood",
        )
        paths = list_images(folder)
        if not paths:
            raise ValueError(f"{folder} holds no images")
        super().__init__(paths, [-1] * len(paths), transform=transform, on_error=on_error)
