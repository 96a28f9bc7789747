"""SVHN (cropped digits, format 2) from the official ``.mat`` files, read with scipy.

Layout: ``<root>/{train,test,extra}_32x32.mat``, each with ``X`` uint8 ``[32, 32, 3, N]`` and ``y`` ``[N, 1]`` in 1..10,
where 10 stands for the digit 0 (mapped to label 0 here, as torchvision does). A file whose ``X`` / ``y`` have another
shape or type, or a label outside 1..10, raises an error naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.datasets.cifar import ArrayImageDataset
from common.data.errors import check_label_range, data_file_error, require_path

LAYOUT = "  <root>/{train,test,extra}_32x32.mat"


def load_svhn(root: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 32, 32, 3], labels int64 [N] in 0..9)``."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if split not in ("train", "test", "extra"):
        raise ValueError(f"split must be 'train', 'test' or 'extra', got {split!r}")
    path = require_path(Path(root) / f"{split}_32x32.mat", dataset="SVHN", layout=LAYOUT, make_target="data-svhn")
    target = "data-svhn"
    try:
        mat = loadmat(path)
    except (MatReadError, ValueError, OSError, TypeError) as e:
        raise data_file_error(path, "reading", f"not a readable .mat file ({e})", target) from e
    for key in ("X", "y"):
        if key not in mat:
            raise data_file_error(path, f"field '{key}'", "missing: this is not an SVHN format-2 file", target)
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise data_file_error(path, "field 'X'", f"{x.dtype} {x.shape}, expected uint8 [32, 32, 3, N]", target)
    if y.dtype.kind not in "iuf" or y.size != x.shape[3] or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise data_file_error(path, "field 'y'", f"{y.dtype} {y.shape}, expected {x.shape[3]} integer labels", target)
    y = check_label_range(
        y.reshape(-1).astype(np.int64), 1, 10, path=path, field="field 'y' (1..10)", make_target=target
    )
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y % 10


class SVHN(ArrayImageDataset):
    def __init__(self, root: str | Path, split: str = "test", transform=None) -> None:
        super().__init__(*load_svhn(root, split), transform=transform)
