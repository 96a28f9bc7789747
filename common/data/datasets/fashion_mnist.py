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

from common.data.errors import DatasetNotFoundError, check_label_range, data_file_error, require_path

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


_TARGET = "data-fashion-mnist"


def read_idx(path: str | Path, *, ndim: int | None = None, dtype_code: int | None = None) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip-compressed or not.

    Header: two zero bytes, a dtype code, the number of dimensions ``n``, then ``n`` big-endian uint32 sizes.
    ``ndim`` / ``dtype_code`` (e.g. 3 / 0x08 for an images file) are what the caller expects, if given.
    Raises :class:`~common.data.errors.DataFileError` naming the file and the header field when the header is wrong
    (magic, dtype code, number of dimensions, sizes against the file length: a truncated download).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise data_file_error(path, "reading", f"cannot read the IDX file ({e})", _TARGET) from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise data_file_error(path, "magic number", "not an IDX file (bad magic number)", _TARGET)
    if data[2] not in _IDX_DTYPES:
        raise data_file_error(path, "header byte 2 (dtype code)", f"unknown IDX dtype code 0x{data[2]:02X}", _TARGET)
    if dtype_code is not None and data[2] != dtype_code:
        raise data_file_error(
            path,
            "header byte 2 (dtype code)",
            f"0x{data[2]:02X}, expected 0x{dtype_code:02X} (unsigned bytes)",
            _TARGET,
        )
    n = data[3]
    if ndim is not None and n != ndim:
        raise data_file_error(path, "header byte 3 (number of dimensions)", f"{n}, expected {ndim}", _TARGET)
    if len(data) < 4 + 4 * n:
        raise data_file_error(
            path,
            "header",
            f"says {n} dimensions ({4 + 4 * n} header bytes) but the file has {len(data)} bytes",
            _TARGET,
        )
    dims = np.frombuffer(data, dtype=">u4", count=n, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = data[4 + 4 * n :]
    if len(payload) != expected:
        raise data_file_error(
            path,
            "sizes in the header",
            f"truncated or corrupt: the header says {tuple(dims.tolist())} ({expected} bytes), found {len(payload)} "
            f"bytes",
            _TARGET,
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
    """Return ``(images uint8 [N, 28, 28], labels int64 [N] in 0..9)`` for ``split`` in {"train", "test"}.

    Checks each header (:func:`read_idx`: unsigned bytes, 3 / 1 dimensions, 28 x 28 images), that both files hold
    the same number of items and that every label is a class id 0..9; errors name the file.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = require_path(root, dataset="Fashion-MNIST", layout=LAYOUT, make_target=_TARGET)
    img_file, lbl_file = (_find(root, s) for s in _FILES[split])
    images = read_idx(img_file, ndim=3, dtype_code=0x08)
    if images.shape[1:] != (28, 28):
        raise data_file_error(
            img_file, "sizes in the header", f"images of {images.shape[1:]}, expected 28 x 28", _TARGET
        )
    labels = read_idx(lbl_file, ndim=1, dtype_code=0x08).astype(np.int64)
    if len(images) != len(labels):
        raise data_file_error(
            lbl_file, "size in the header", f"{len(labels)} labels but '{img_file}' holds {len(images)} images", _TARGET
        )
    check_label_range(
        labels, 0, len(FASHION_MNIST_CLASSES) - 1, path=lbl_file, field="labels (0..9)", make_target=_TARGET
    )
    return images, labels


def hierarchical_labels(fine: np.ndarray) -> np.ndarray:
    """``[N]`` fine labels -> ``[N, 2]`` ``[class, group]`` labels (see the module docstring)."""
    fine = np.asarray(fine)
    if fine.size and (fine.min() < 0 or fine.max() >= len(FASHION_MNIST_HIERARCHY)):
        raise ValueError(f"Fashion-MNIST class ids are 0..9, got values in [{fine.min()}, {fine.max()}]")
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
