"""ImageNet (few-shot source) and its shifted versions for domain generalisation: -V2, -Sketch, -A, -R.

Layout under ``root`` (``${paths.data_dir}/coop``; CoOp's DATASETS.md; one target per set, :data:`MAKE_TARGETS`,
named in the reader's errors; ``make data-coop`` fetches them all with GalLoP's other data)::

    imagenet/images/{train,val}/<wnid>/*.JPEG   imagenet/classnames.txt   ("<wnid> <class name>" per line)
    imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg   (folder = class index)
    imagenet-sketch/images/<wnid>/*.JPEG
    imagenet-adversarial/imagenet-a/<wnid>/*.jpg    (200 classes)
    imagenet-rendition/imagenet-r/<wnid>/*.jpg      (200 classes)

Class order is the sorted wnid order (= ``classnames.txt`` order). Without ``classnames.txt`` the names come from
``open_clip.IMAGENET_CLASSNAMES`` (CLIP's curated names, the same order). Labels of every shifted set live in the
1000-class space; ImageNet-A and -R carry ``class_subset`` (their 200 class ids, sorted) so that they are scored on
those 200 classes only, as CoOp and GalLoP do. ImageNet's val set is the test set (CoOp).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.data.datasets.base import ImageListDataset
from common.data.errors import data_file_error, require_path

MAKE_TARGETS = {  # the `make` target that fetches each set (each also fetches imagenet/classnames.txt)
    "imagenet": "data-coop-imagenet",
    "imagenet_v2": "data-imagenet-v2",
    "imagenet_sketch": "data-imagenet-sketch",
    "imagenet_a": "data-imagenet-a",
    "imagenet_r": "data-imagenet-r",
}
IMG_EXT = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")
LAYOUTS = {
    "imagenet": "  <root>/imagenet/images/{train,val}/<wnid>/*.JPEG, <root>/imagenet/classnames.txt",
    "imagenet_v2": "  <root>/imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg",
    "imagenet_sketch": "  <root>/imagenet-sketch/images/<wnid>/*.JPEG",
    "imagenet_a": "  <root>/imagenet-adversarial/imagenet-a/<wnid>/*.jpg",
    "imagenet_r": "  <root>/imagenet-rendition/imagenet-r/<wnid>/*.jpg",
}


def read_classnames(root: str | Path, make_target: str = MAKE_TARGETS["imagenet"]) -> tuple[list[str], list[str]]:
    """``(wnids, names)`` in class order, from ``imagenet/classnames.txt`` or, if absent, the train folders +
    ``open_clip.IMAGENET_CLASSNAMES``. Errors name ``make_target`` (the set being read: each target fetches
    ``classnames.txt``)."""
    f = Path(root) / "imagenet" / "classnames.txt"
    if f.is_file():
        wnids, names = [], []
        for n, ln in enumerate(f.read_text().splitlines(), 1):
            if ln.strip():
                wnid, _, name = ln.strip().partition(" ")
                if not name.strip():
                    raise data_file_error(
                        f, f"line {n}", f"{ln.strip()!r}; expected '<wnid> <class name>'", make_target
                    )
                if wnid in wnids:
                    raise data_file_error(f, f"line {n}", f"class {wnid!r} listed twice", make_target)
                wnids.append(wnid)
                names.append(name.strip())
        return wnids, names
    import open_clip

    train = require_path(
        Path(root) / "imagenet" / "images" / "train",
        dataset="ImageNet",
        layout=LAYOUTS["imagenet"],
        make_target=make_target,
    )
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(wnids) != len(open_clip.IMAGENET_CLASSNAMES):
        raise ValueError(f"{train} has {len(wnids)} class folders, expected 1000; add imagenet/classnames.txt")
    return wnids, list(open_clip.IMAGENET_CLASSNAMES)


def _scan(folder: Path, lut: dict[str, int]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name not in lut:
            raise ValueError(f"{folder}: class folder {d.name!r} is not a known class (wnid or index)")
        for f in sorted(d.iterdir()):
            if f.suffix in IMG_EXT:
                paths.append(str(f))
                labels.append(lut[d.name])
    if not paths:
        raise ValueError(f"{folder}: no images found")
    return paths, labels


class ImageNetDG(ImageListDataset):
    """ImageNet or one of its shifted versions; :attr:`class_names` (1000), :attr:`class_subset` (A, R).

    Args:
        root: folder holding the per-dataset folders (``${paths.data_dir}/coop``).
        name: ``imagenet``, ``imagenet_v2``, ``imagenet_sketch``, ``imagenet_a`` or ``imagenet_r``.
        split: for ``imagenet`` only: ``train`` or ``test`` (= val).
    """

    def __init__(
        self,
        root: str | Path,
        name: str = "imagenet",
        split: str = "test",
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"unknown ImageNet variant {name!r}; choose one of {sorted(LAYOUTS)}")
        root = Path(root)
        wnids, names = read_classnames(root, MAKE_TARGETS[name])
        by_wnid = {w: i for i, w in enumerate(wnids)}
        folder = {
            "imagenet": root
            / "imagenet"
            / "images"
            / {"train": "train", "test": "val", "val": "val"}.get(split, split),
            "imagenet_v2": root / "imagenetv2" / "imagenetv2-matched-frequency-format-val",
            "imagenet_sketch": root / "imagenet-sketch" / "images",
            "imagenet_a": root / "imagenet-adversarial" / "imagenet-a",
            "imagenet_r": root / "imagenet-rendition" / "imagenet-r",
        }[name]
        if name == "imagenet" and split not in ("train", "test", "val"):
            raise ValueError(f"split must be train or test (val) for ImageNet, got {split!r}")
        folder = require_path(folder, dataset=name, layout=LAYOUTS[name], make_target=MAKE_TARGETS[name])
        lut = {str(i): i for i in range(len(wnids))} if name == "imagenet_v2" else by_wnid
        paths, labels = _scan(folder, lut)
        self.class_names = names
        self.class_subset = sorted(set(labels)) if name in ("imagenet_a", "imagenet_r") else None
        self.name, self.split = name, split
        super().__init__(paths, labels, transform=transform, on_error=on_error)
