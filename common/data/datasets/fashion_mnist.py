"""Fashion-MNIST, the embedded default dataset, read from the original IDX files.

Layout expected under ``root`` (the files may be gzip-compressed or not)::

    root/
      train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
      t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

``make data-fashion-mnist`` fills ``${paths.data_dir}/fashion-mnist`` from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``) when apt is there, and downloads the same four files otherwise.

Hierarchy (two levels, ``labels[:, 0]`` = class, ``labels[:, 1]`` = coarse group)::

    0 upper-body garments : T-shirt/top (0), Pullover (2), Coat (4), Shirt (6)
    1 lower-body / dresses: Trouser (1), Dress (3)
    2 footwear            : Sandal (5), Sneaker (7), Ankle boot (9)
    3 bags                : Bag (8)

The grouping is ours: it follows what is worn where, which is how a shop would shelve these items.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data.errors import DatasetNotFoundError, require_path

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_GROUPS: tuple[str, ...] = ("upper-body", "lower-body/dress", "footwear", "bag")
# fine class id -> coarse group id
FASHION_MNIST_HIERARCHY: tuple[int, ...] = (0, 1, 0, 1, 0, 2, 0, 2, 3, 2)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUT = "\n".join(f"  <root>/{f}[.gz]" for pair in _FILES.values() for f in pair)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip-compressed or not.

    Header: two zero bytes, a dtype code, the number of dimensions ``n``, then ``n`` big-endian uint32 sizes.
    Raises ``ValueError`` naming the file when the header or the payload size is wrong (truncated download).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file '{path}': {e}. Delete it and run `make data-fashion-mnist`.") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"'{path}' is not an IDX file (bad magic number). Run `make data-fashion-mnist`.")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = data[4 + 4 * ndim :]
    if len(payload) != expected:
        raise ValueError(
            f"IDX file '{path}' is truncated or corrupt: header says {tuple(dims)} ({expected} bytes), "
            f"found {len(payload)} bytes. Delete it and run `make data-fashion-mnist`."
        )
    return np.frombuffer(payload, dtype=dtype).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).exists():
            return root / name
    raise DatasetNotFoundError(
        f"Fashion-MNIST file '{stem}[.gz]' not found in '{root}'.\nExpected layout:\n{LAYOUT}\n"
        f"Run `make data-fashion-mnist` (copies Debian's dataset-fashion-mnist files, or downloads them), "
        f"or point `paths.data_dir` at the folder that holds `fashion-mnist/`."
    )


def load_fashion_mnist(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 28, 28], labels int64 [N])`` for ``split`` in {"train", "test"}."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = require_path(root, dataset="Fashion-MNIST", layout=LAYOUT, make_target="data-fashion-mnist")
    img_file, lbl_file = (_find(root, s) for s in _FILES[split])
    images, labels = read_idx(img_file), read_idx(lbl_file).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def hierarchical_labels(fine: np.ndarray) -> np.ndarray:
    """``[N]`` fine labels -> ``[N, 2]`` ``[class, group]`` labels (see the module docstring)."""
    groups = np.asarray(FASHION_MNIST_HIERARCHY, dtype=np.int64)[fine]
    return np.stack([fine, groups], axis=1)


class FashionMNIST(Dataset):
    """Fashion-MNIST as dicts ``{"image", "label", "index"}``.

    Args:
        root: folder holding the four IDX files.
        split: "train" or "test".
        transform: applied to the grayscale PIL image (default: float tensor ``[1, 28, 28]`` in [0, 1]).
        levels: 1 for class labels ``[N]``, 2 for ``[N, 2]`` = ``[class, group]``.
        classes: keep only these class ids (e.g. to hold classes out as near-OOD); labels are not remapped.
        subset: keep only the first ``subset`` items per class after the class filter (a quick, balanced subset).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        levels: int = 1,
        classes: Sequence[int] | None = None,
        subset: int | None = None,
    ) -> None:
        if levels not in (1, 2):
            raise ValueError(f"Fashion-MNIST has a 2-level hierarchy; levels must be 1 or 2, got {levels}")
        images, labels = load_fashion_mnist(root, split)
        keep = np.ones(len(labels), dtype=bool) if classes is None else np.isin(labels, np.asarray(list(classes)))
        if subset is not None:
            rank_in_class = np.zeros(len(labels), dtype=np.int64)
            for c in np.unique(labels):
                idx = np.flatnonzero(labels == c)
                rank_in_class[idx] = np.arange(len(idx))
            keep &= rank_in_class < subset
        self.images = images[keep]
        fine = labels[keep]
        self.labels = torch.from_numpy(hierarchical_labels(fine) if levels == 2 else fine)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = Image.fromarray(self.images[i], mode="L")
        if self.transform is not None:
            x = self.transform(image)
        else:
            x = torch.from_numpy(self.images[i]).float().div_(255.0).unsqueeze(0)
        return {"image": x, "label": self.labels[i], "index": i}
