"""SVHN (cropped digits, format 2) from the official ``.mat`` files, read with scipy.

Layout: ``<root>/{train,test,extra}_32x32.mat``, each with ``X`` uint8 ``[32, 32, 3, N]`` and ``y`` ``[N, 1]`` in 1..10,
where 10 stands for the digit 0 (mapped to label 0 here, as torchvision does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.datasets.cifar import ArrayImageDataset
from common.data.errors import require_path

LAYOUT = "  <root>/{train,test,extra}_32x32.mat"


def load_svhn(root: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 32, 32, 3], labels int64 [N] in 0..9)``."""
    from scipy.io import loadmat

    if split not in ("train", "test", "extra"):
        raise ValueError(f"split must be 'train', 'test' or 'extra', got {split!r}")
    path = require_path(Path(root) / f"{split}_32x32.mat", dataset="SVHN", layout=LAYOUT, make_target="data-svhn")
    mat = loadmat(path)
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path} has no 'X'/'y' arrays: it is not an SVHN format-2 file")
    x = np.asarray(mat["X"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: X has shape {x.shape}, expected [32, 32, 3, N]")
    y = np.asarray(mat["y"]).reshape(-1).astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


class SVHN(ArrayImageDataset):
    def __init__(self, root: str | Path, split: str = "test", transform=None) -> None:
        super().__init__(*load_svhn(root, split), transform=transform)
