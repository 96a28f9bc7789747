"""OOD test sets in their official folder layouts: DTD, Places365 (small val), LSUN, TinyImageNet.

Layouts::

    DTD          <root>/dtd/images/<class>/<name>.jpg   <root>/dtd/labels/{train,val,test}<1..10>.txt  ("class/name.jpg")
    Places365    <root>/places365/places365_val.txt ("Places365_val_00000001.jpg 165")   <root>/places365/val_256/*.jpg
                 (torchvision's ``Places365(split="val", small=True)`` layout; 36,500 images)
    LSUN         <root>/LSUN/<category>/*.{jpg,png,webp}   images exported from the 10 scene-category **val** lmdbs
                 (HEAT: 300 per category); ``scripts`` of the LSUN repo export them with ``data.py export``. Reading the
                 lmdbs directly would need the ``lmdb`` package, which this project does not depend on.
    TinyImageNet <root>/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG,
                 val/val_annotations.txt, test/images/*.JPEG}   (test is unlabelled; HEAT uses test, 10,000)

Unlabelled sets get label -1. Each class returns dicts ``{"image", "label", "index"}`` via ImageListDataset.
"""

from __future__ import annotations

from pathlib import Path

from common.data.datasets.base import ImageListDataset
from common.data.errors import check_label_range, data_file_error, int_field, require_path

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXT)


class DTD(ImageListDataset):
    """Describable Textures, ``split`` in {"train", "val", "test"} of ``partition`` 1..10, or ``split="all"`` (5,640)."""

    LAYOUT = "  <root>/dtd/images/<class>/<name>.jpg\n  <root>/dtd/labels/{train,val,test}<1..10>.txt"

    def __init__(self, root, split: str = "test", partition: int = 1, transform=None, on_error: str = "raise"):
        base = require_path(Path(root) / "dtd", dataset="DTD", layout=self.LAYOUT, make_target="data-dtd")
        images = require_path(base / "images", dataset="DTD", layout=self.LAYOUT, make_target="data-dtd")
        classes = sorted(p.name for p in images.iterdir() if p.is_dir())
        if split == "all":
            rel = [p.relative_to(images).as_posix() for p in list_images(images)]
        else:
            if split not in ("train", "val", "test") or not 1 <= partition <= 10:
                raise ValueError(f"DTD split must be train/val/test/all and partition 1..10; got {split}, {partition}")
            lst = require_path(
                base / "labels" / f"{split}{partition}.txt", dataset="DTD", layout=self.LAYOUT, make_target="data-dtd"
            )
            numbered = [(n, ln.strip()) for n, ln in enumerate(lst.read_text().splitlines(), 1) if ln.strip()]
            for n, r in numbered:
                if r.split("/")[0] not in classes:
                    raise data_file_error(
                        lst,
                        f"line {n}",
                        f"{r!r} is not '<class>/<image>' with a class folder of '{images}'",
                        "data-dtd",
                    )
            rel = [r for _, r in numbered]
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[r.split("/")[0]] for r in rel]
        self.classes = classes
        super().__init__([images / r for r in rel], labels, transform=transform, on_error=on_error)


class Places365(ImageListDataset):
    """Places365-Standard small (256x256) validation set, labels 0..364."""

    LAYOUT = "  <root>/places365/places365_val.txt\n  <root>/places365/val_256/Places365_val_XXXXXXXX.jpg"
    NUM_CLASSES = 365

    def __init__(self, root, transform=None, on_error: str = "raise", max_items: int | None = None):
        base = require_path(
            Path(root) / "places365", dataset="Places365", layout=self.LAYOUT, make_target="data-places365"
        )
        lst = require_path(
            base / "places365_val.txt", dataset="Places365", layout=self.LAYOUT, make_target="data-places365"
        )
        numbered = [(n, ln.split()) for n, ln in enumerate(lst.read_text().splitlines(), 1) if ln.strip()][:max_items]
        target = "data-places365"
        for n, r in numbered:
            if len(r) != 2:
                raise data_file_error(lst, f"line {n}", f"{' '.join(r)!r}; expected '<file> <label>'", target)
        labels = [int_field(r[1], path=lst, where=f"line {n}, label", make_target=target) for n, r in numbered]
        check_label_range(
            labels, 0, self.NUM_CLASSES - 1, path=lst, field="label", lines=[n for n, _ in numbered], make_target=target
        )
        super().__init__([base / "val_256" / r[0] for _, r in numbered], labels, transform=transform, on_error=on_error)


class LSUN(ImageListDataset):
    """LSUN scene images exported from the val lmdbs (one folder per category), unlabelled (-1)."""

    LAYOUT = "  <root>/LSUN/<category>/*.jpg   (exported from <category>_val_lmdb)"

    def __init__(self, root, transform=None, on_error: str = "raise", per_category: int | None = None):
        base = require_path(Path(root) / "LSUN", dataset="LSUN", layout=self.LAYOUT, make_target="data-lsun")
        paths = []
        for cat in sorted(p for p in base.iterdir() if p.is_dir()):
            paths += list_images(cat)[:per_category]
        if not paths:
            raise ValueError(f"no images under {base}; export the val lmdbs to one folder per category first")
        super().__init__(paths, [-1] * len(paths), transform=transform, on_error=on_error)


class TinyImageNet(ImageListDataset):
    """Tiny ImageNet: ``split="test"`` (unlabelled, -1), ``"val"`` (from val_annotations.txt) or ``"train"``."""

    LAYOUT = (
        "  <root>/tiny-imagenet-200/wnids.txt\n  <root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG\n"
        "  <root>/tiny-imagenet-200/val/images/*.JPEG + val/val_annotations.txt\n"
        "  <root>/tiny-imagenet-200/test/images/*.JPEG"
    )

    def __init__(self, root, split: str = "test", transform=None, on_error: str = "raise"):
        kw = dict(dataset="TinyImageNet", layout=self.LAYOUT, make_target="data-tinyimagenet")
        base = require_path(Path(root) / "tiny-imagenet-200", **kw)
        if split == "test":
            paths = list_images(require_path(base / "test" / "images", **kw))
            labels = [-1] * len(paths)
        elif split in ("train", "val"):
            wnids = require_path(base / "wnids.txt", **kw).read_text().split()
            index = {w: i for i, w in enumerate(wnids)}
            if split == "train":
                paths, labels = [], []
                for w in wnids:
                    imgs = list_images(require_path(base / "train" / w / "images", **kw))
                    paths += imgs
                    labels += [index[w]] * len(imgs)
            else:
                ann = require_path(base / "val" / "val_annotations.txt", **kw)
                rows = [(n, ln.split("\t")) for n, ln in enumerate(ann.read_text().splitlines(), 1) if ln.strip()]
                for n, r in rows:
                    if len(r) < 2 or r[1] not in index:
                        raise data_file_error(
                            ann,
                            f"line {n}",
                            f"{r!r}: expected '<image>\\t<wnid>' with a wnid of wnids.txt",
                            kw["make_target"],
                        )
                paths = [base / "val" / "images" / r[0] for _, r in rows]
                labels = [index[r[1]] for _, r in rows]
        else:
            raise ValueError(f"TinyImageNet split must be train/val/test, got {split!r}")
        super().__init__(paths, labels, transform=transform, on_error=on_error)
