"""MS-COCO 2017 as a multi-label retrieval benchmark: multi-hot object labels from the instance annotations.

Layout under ``root`` (cocodataset.org, "2017 Train images", "2017 Val images", "2017 Train/Val annotations")::

    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json
    root/train2017/<file_name>      e.g. 000000391895.jpg, the ``file_name`` of the JSON's ``images``
    root/val2017/<file_name>

Labels: a boolean multi-hot matrix ``[N, 80]``. The 80 category ids (1..90 with gaps) are mapped to columns
``0..79`` in increasing id order (:attr:`COCOMultiLabel.category_ids`, names in :attr:`category_names`). An image
has a category when at least one instance annotation of that category lies on it (crowd annotations included;
``include_crowd=False`` leaves them out). Images without any annotation (1,021 in train2017, 48 in val2017) have no
label and so no relevant item: they are kept out and counted in :attr:`COCOMultiLabel.num_unannotated`.

Relevance between two images (:mod:`common.metrics.relevance`): ``t = |A_q ∩ A_j|``, the number of labels they
share. Binary metrics count an image as relevant when ``t >= 1``; NDCG uses the gain ``2^t - 1`` and H-AP the
``pop`` relevance over the levels ``t = 1..80``.

Protocols (``protocol``):

* ``"hashing"`` (default), the usual multi-label retrieval protocol on COCO, from HashNet (Cao et al., "HashNet:
  Deep Learning to Hash by Continuation", ICCV 2017, Sec. 4 "Setup") and the deep-hashing works that follow it:
  the annotated images of train and val form one pool (122,218 images; the 2017 split holds the same images as
  2014's train + val); ``num_queries`` = 5,000 random images are the queries (``split="query"``), the others the
  database (``split="database"``, the gallery), and ``num_train`` = 10,000 random database images the training
  set (``split="train"``). The draw is ours: a permutation of the pool sorted by image id, seeded by
  ``split_seed``; HashNet's own list files are not used.
* ``"official"``: train on ``train2017`` (``split="train"``, 117,266 images) and test on ``val2017``
  (``split="val"``, 4,952 images) as a single set, every image a query against all the others.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset
from common.data.errors import data_file_error, require_path

log = logging.getLogger(__name__)

DATASET = "MS-COCO 2017"
MAKE_TARGET = "data-coco"
LAYOUT = """  <root>/annotations/instances_{train,val}2017.json
  <root>/train2017/<file_name>.jpg, <root>/val2017/<file_name>.jpg"""
PROTOCOL_SPLITS = {"hashing": ("train", "query", "database"), "official": ("train", "val")}
NUM_CLASSES = 80


@dataclass(frozen=True)
class CocoInstances:
    """What a multi-label reader needs from one ``instances_*.json`` file (annotated images only)."""

    image_ids: np.ndarray  # int64 [N], increasing
    file_names: list[str]  # [N]
    labels: np.ndarray  # bool [N, C]
    category_ids: np.ndarray  # int64 [C], increasing
    category_names: list[str]  # [C]
    num_unannotated: int


@functools.lru_cache(maxsize=4)
def read_instances(path: str | Path, include_crowd: bool = True) -> CocoInstances:
    """Multi-hot labels of the annotated images of an ``instances_*.json`` (cached: the train file is 450 MB)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise data_file_error(path, "top level", f"no {missing}; not a COCO instances_*.json file", MAKE_TARGET)
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    cat_ids = np.array([int(c["id"]) for c in cats], dtype=np.int64)
    column = {int(c): k for k, c in enumerate(cat_ids.tolist())}
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    row = {int(im["id"]): i for i, im in enumerate(images)}
    labels = np.zeros((len(images), len(cats)), dtype=bool)
    for ann in data["annotations"]:
        if not include_crowd and ann.get("iscrowd", 0):
            continue
        img, cat = int(ann["image_id"]), int(ann["category_id"])
        if img not in row or cat not in column:
            problem = f"image {img} or category {cat} is not listed in the file's images / categories"
            raise data_file_error(path, f"annotation {ann.get('id')}", problem, MAKE_TARGET)
        labels[row[img], column[cat]] = True
    annotated = labels.any(axis=1)
    keep = np.flatnonzero(annotated)
    return CocoInstances(
        image_ids=np.array([int(images[i]["id"]) for i in keep], dtype=np.int64),
        file_names=[str(images[i]["file_name"]) for i in keep],
        labels=labels[keep],
        category_ids=cat_ids,
        category_names=[str(c["name"]) for c in cats],
        num_unannotated=int((~annotated).sum()),
    )


def hashing_split(num_items: int, num_queries: int, num_train: int, seed: int) -> dict[str, np.ndarray]:
    """Positions of the ``query``, ``database`` and ``train`` items of a pool of ``num_items`` (HashNet protocol).

    One permutation (``numpy.random.RandomState(seed)``): its first ``num_queries`` entries are the queries, the rest
    the database in permutation order, and the first ``num_train`` database items the training set. Each part is
    returned sorted.
    """
    if num_queries < 1 or num_train < 1:
        raise ValueError(f"num_queries and num_train must be positive, got {num_queries} and {num_train}")
    if num_queries + num_train > num_items:
        raise ValueError(
            f"num_queries ({num_queries}) + num_train ({num_train}) exceed the {num_items} annotated images; lower them"
        )
    perm = np.random.RandomState(seed).permutation(num_items)
    database = perm[num_queries:]
    return {
        "query": np.sort(perm[:num_queries]),
        "database": np.sort(database),
        "train": np.sort(database[:num_train]),
    }


class COCOMultiLabel(ImageListDataset):
    """MS-COCO 2017 with boolean multi-hot labels ``[N, 80]`` (see the module docstring for the protocols).

    Args:
        root: the COCO folder (layout above).
        split: ``"train"``, ``"query"`` or ``"database"`` (``protocol="hashing"``); ``"train"`` or ``"val"``
            (``protocol="official"``).
        protocol: ``"hashing"`` or ``"official"``.
        num_queries, num_train, split_seed: the hashing protocol's draw (5,000 / 10,000 / 0).
        include_crowd: count crowd annotations as labels (default True).
        transform, on_error: see :class:`~common.data.datasets.base.ImageListDataset`.

    Attributes:
        labels: bool ``[N, 80]``.
        image_ids: the COCO image id of each item.
        category_ids, category_names: the category of each label column.
        num_unannotated: images of the split's annotation file(s) left out for having no annotation.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        protocol: str = "hashing",
        num_queries: int = 5000,
        num_train: int = 10000,
        split_seed: int = 0,
        include_crowd: bool = True,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if protocol not in PROTOCOL_SPLITS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOL_SPLITS)}, got {protocol!r}")
        if split not in PROTOCOL_SPLITS[protocol]:
            raise ValueError(
                f"split of protocol {protocol!r} must be one of {PROTOCOL_SPLITS[protocol]}, got {split!r}"
            )
        root = require_path(root, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)
        if protocol == "official":
            parts = ["train2017" if split == "train" else "val2017"]
        else:
            parts = ["train2017", "val2017"]
        files, names, ids, labels, unannotated, cats = [], [], [], [], 0, None
        for part in parts:
            ann = require_path(
                root / "annotations" / f"instances_{part}.json", dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET
            )
            inst = read_instances(str(ann), include_crowd)
            if cats is not None and not np.array_equal(cats[0], inst.category_ids):
                raise ValueError(f"the categories of instances_{part}.json differ from those of the other file")
            cats = (inst.category_ids, inst.category_names)
            files += [root / part / f for f in inst.file_names]
            ids.append(inst.image_ids)
            labels.append(inst.labels)
            unannotated += inst.num_unannotated
            names = inst.category_names
        image_ids, label_mat = np.concatenate(ids), np.concatenate(labels)
        if protocol == "hashing":
            order = np.argsort(image_ids, kind="stable")  # the pool sorted by image id, whatever the file order
            keep = order[hashing_split(len(order), num_queries, num_train, split_seed)[split]]
            files, image_ids, label_mat = [files[i] for i in keep], image_ids[keep], label_mat[keep]
        if label_mat.shape[1] != NUM_CLASSES:
            log.warning("COCO annotations with %d categories (expected %d)", label_mat.shape[1], NUM_CLASSES)
        if unannotated:
            log.info("COCO %s/%s: %d images without annotations left out", protocol, split, unannotated)
        super().__init__(files, label_mat, transform=transform, on_error=on_error, multilabel=True)
        self.split, self.protocol = split, protocol
        self.image_ids = image_ids
        self.category_ids, self.category_names = cats[0], list(names)
        self.num_unannotated = unannotated
