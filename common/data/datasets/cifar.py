"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layouts (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}

Each batch is a pickle dict with ``b"data"`` (uint8 ``[N, 3072]``, channel-major 32x32) and ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100). ``levels=2`` on CIFAR-100 gives
``[fine, coarse]`` labels. Items are dicts ``{"image", "label", "index"}`` (the image a PIL RGB image before
``transform``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data.errors import require_path

_SPEC = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}),
}


def load_cifar(root: str | Path, name: str = "cifar10", split: str = "train", levels: int = 1):
    """``(images uint8 [N, 32, 32, 3], labels int64 [N] or [N, 2])`` from the pickle batches."""
    if name not in _SPEC:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    folder, splits = _SPEC[name]
    if split not in splits:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if levels == 2 and name != "cifar100":
        raise ValueError("levels=2 ([fine, coarse]) exists only for CIFAR-100")
    layout = f"  <root>/{folder}/" + ", ".join(sum(splits.values(), []))
    base = require_path(Path(root) / folder, dataset=name.upper(), layout=layout, make_target=f"data-{name}")
    data, fine, coarse = [], [], []
    for f in splits[split]:
        path = require_path(base / f, dataset=name.upper(), layout=layout, make_target=f"data-{name}")
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        data.append(np.asarray(d[b"data"], dtype=np.uint8))
        fine.append(np.asarray(d[b"labels" if name == "cifar10" else b"fine_labels"], dtype=np.int64))
        if name == "cifar100":
            coarse.append(np.asarray(d[b"coarse_labels"], dtype=np.int64))
    x = np.concatenate(data)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError(f"{path}: expected data of shape [N, 3072], got {x.shape}; the file is not a CIFAR batch")
    images = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    labels = np.concatenate(fine)
    if levels == 2:
        labels = np.stack([labels, np.concatenate(coarse)], 1)
    return images, labels


class ArrayImageDataset(Dataset):
    """uint8 HWC (or HW) image arrays with labels, as dicts ``{"image", "label", "index"}``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = Image.fromarray(self.images[i])
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": self.labels[i], "index": i}


class CIFAR(ArrayImageDataset):
    """CIFAR-10 / CIFAR-100 (``name``) ``split`` in {"train", "test"}."""

    def __init__(self, root: str | Path, name: str = "cifar10", split: str = "train", transform=None, levels: int = 1):
        super().__init__(*load_cifar(root, name, split, levels), transform=transform)
