"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layouts (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}

Each batch is a pickle dict with ``b"data"`` (uint8 ``[N, 3072]``, channel-major 32x32) and ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100). ``levels=2`` on CIFAR-100 gives
``[fine, coarse]`` labels. Items are dicts ``{"image", "label", "index"}`` (the image a PIL RGB image before
``transform``).

The batches are read with :func:`common.utils.safe_pickle.restricted_load` (builtin values and numpy arrays only: a
batch file that asks for anything else is refused, never executed). Each batch is checked: a dict holding ``b"data"``
(uint8 ``[N, 3072]``) and one label list per level of ``N`` ints in ``0..C-1`` (10 / 100 fine / 20 coarse); an error
names the file and the field.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data.errors import check_label_range, data_file_error, require_path
from common.utils.safe_pickle import restricted_load

_SPEC = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}),
}
# label fields of a batch and their number of classes
_LABEL_FIELDS = {"cifar10": ((b"labels", 10),), "cifar100": ((b"fine_labels", 100), (b"coarse_labels", 20))}


def read_cifar_batch(path: str | Path, name: str = "cifar10") -> tuple[np.ndarray, list[np.ndarray]]:
    """``(data uint8 [N, 3072], [labels int64 [N] per label field])`` of one batch file, checked (module docstring)."""
    target = f"data-{name}"
    try:
        d = restricted_load(path, encoding="bytes")
    except pickle.UnpicklingError as e:
        raise type(e)(f"{e} (`make {target}`)") from None
    if not isinstance(d, dict):
        raise data_file_error(path, "top level", f"a {type(d).__name__}, expected the batch dict", target)
    for key in (b"data", *(k for k, _ in _LABEL_FIELDS[name])):
        if key not in d:
            raise data_file_error(path, f"field {key!r}", f"missing (fields: {sorted(d)})", target)
    data = d[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise data_file_error(path, "field b'data'", f"got {got}, expected uint8 [N, 3072]", target)
    labels = []
    for key, n_classes in _LABEL_FIELDS[name]:
        lab = np.asarray(d[key])
        if lab.ndim != 1 or lab.dtype.kind not in "iu" or len(lab) != len(data):
            raise data_file_error(
                path,
                f"field {key!r}",
                f"got {lab.dtype} {lab.shape}, expected {len(data)} ints (one per image)",
                target,
            )
        labels.append(
            check_label_range(lab, 0, n_classes - 1, path=path, field=f"field {key!r}", make_target=target).astype(
                np.int64
            )
        )
    return data, labels


def load_cifar(root: str | Path, name: str = "cifar10", split: str = "train", levels: int = 1):
    """``(images uint8 [N, 32, 32, 3], labels int64 [N] or [N, 2])`` from the pickle batches."""
    if name not in _SPEC:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    folder, splits = _SPEC[name]
    if split not in splits:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if levels not in (1, 2):
        raise ValueError(f"levels must be 1 (fine) or 2 ([fine, coarse], CIFAR-100), got {levels}")
    if levels == 2 and name != "cifar100":
        raise ValueError("levels=2 ([fine, coarse]) exists only for CIFAR-100")
    layout = f"  <root>/{folder}/" + ", ".join(sum(splits.values(), []))
    base = require_path(Path(root) / folder, dataset=name.upper(), layout=layout, make_target=f"data-{name}")
    data, levels_of = [], []
    for f in splits[split]:
        path = require_path(base / f, dataset=name.upper(), layout=layout, make_target=f"data-{name}")
        x, labels = read_cifar_batch(path, name)
        data.append(x)
        levels_of.append(labels)
    images = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    columns = [np.concatenate([lab[c] for lab in levels_of]) for c in range(levels)]
    return images, (columns[0] if levels == 1 else np.stack(columns, 1))


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
