"""Base dataset for image files listed with their labels.

Every reader in ``common/data/datasets`` parses its official split files into a list of paths and a label
array, and hands them to :class:`ImageListDataset`. Items are dicts ``{"image", "label", "index"}``.
Readers whose official ids are sparse (iNaturalist, DyML train) renumber them with :func:`remap_labels`.
Readers of one list file per split under a dataset folder (SOP, In-Shop, iNaturalist) subclass
:class:`SplitFileDataset`, which checks the split, the levels and the files, and write only the parser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from common.data.errors import check_labels, require_path

log = logging.getLogger(__name__)


def remap_labels(labels: np.ndarray | torch.Tensor | Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    """Renumber each label column to ``0..n_c-1``, in increasing order of its original values.

    For column ``c`` with sorted distinct values ``u_0 < u_1 < ... < u_{n_c-1}``, an item whose value is ``u_k``
    gets label ``k``. Proxy-based losses (one proxy per class) and anything sized by ``labels.max() + 1`` need
    these contiguous labels; retrieval metrics only compare labels for equality and are unchanged by it. The
    order is that of the values, so the result does not depend on the order of the items.

    Args:
        labels: ``[N]`` or ``[N, L]`` (ints, or any sortable keys such as strings).

    Returns:
        ``(new, class_ids)``: ``new`` int64 with the shape of ``labels``; ``class_ids[c]`` the sorted distinct
        values of column ``c`` (``[n_c]``), so ``class_ids[c][new[:, c]]`` gives back the original column.
    """
    arr = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim not in (1, 2):
        raise ValueError(f"labels must be [N] or [N, L], got shape {arr.shape}")
    cols = arr[:, None] if arr.ndim == 1 else arr
    new = np.empty(cols.shape, dtype=np.int64)
    class_ids = []
    for c in range(cols.shape[1]):
        ids, inverse = np.unique(cols[:, c], return_inverse=True)
        new[:, c] = inverse.reshape(-1)
        class_ids.append(ids)
    return (new[:, 0] if arr.ndim == 1 else new), class_ids


def relabel_columns(keys: np.ndarray | torch.Tensor | Sequence) -> np.ndarray:
    """int64 labels: each column of ``keys`` renumbered ``0..n-1`` in sorted order (:func:`remap_labels` without
    the original ids)."""
    return remap_labels(keys)[0]


class CorruptImageError(RuntimeError):
    """An image file could not be decoded."""


class ImageListDataset(Dataset):
    """Images on disk with integer labels (``[N]``, or ``[N, L]`` for a hierarchy), or boolean multi-label ones.

    Args:
        paths: image file paths, one per item.
        labels: int array ``[N]`` or ``[N, L]`` (column 0 = finest level); with ``multilabel=True``, a boolean
            multi-hot matrix ``[N, C]``.
        transform: applied to the RGB (or ``mode``) PIL image.
        on_error: ``"raise"`` (default) stops at the first unreadable file and names it; ``"skip"`` replaces it
            with the next readable item, counts the skip in :attr:`num_skipped` and logs the path.
        mode: PIL mode to convert to ("RGB" or "L").
        multilabel: the labels are a boolean ``[N, C]`` matrix (multi-label relevance); off by default, so a
            boolean array passed by mistake is still refused.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: np.ndarray | torch.Tensor | Sequence[int],
        transform: Callable | None = None,
        on_error: str = "raise",
        mode: str = "RGB",
        multilabel: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.paths = [str(p) for p in paths]
        self.labels = check_labels(torch.as_tensor(np.asarray(labels)), allow_multilabel=multilabel)
        if multilabel and self.labels.dtype != torch.bool:
            raise ValueError(f"multilabel=True needs boolean [N, C] labels, got dtype {self.labels.dtype}")
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels: the split file is inconsistent")
        self.transform = transform
        self.on_error = on_error
        self.mode = mode
        self.num_skipped = 0
        self.skipped_paths: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert(self.mode)
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise CorruptImageError(
                f"cannot read image '{path}' (item {i}): {e}. Re-download the file, or set "
                f"`data.on_error=skip` to skip unreadable images (the skips are counted and logged)."
            ) from e

    def __getitem__(self, i: int) -> dict:
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                image = self.load_image(j)
                break
            except CorruptImageError:
                if self.on_error == "raise":
                    raise
                self.num_skipped += 1
                self.skipped_paths.append(self.paths[j])
                log.warning("skipped unreadable image %s (%d skipped so far)", self.paths[j], self.num_skipped)
        else:
            raise CorruptImageError("no readable image in the whole dataset")
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": self.labels[j], "index": j}


class SplitFileDataset(ImageListDataset):
    """Images listed in one official file per split under a dataset folder, with ``levels`` label columns.

    The constructor checks ``split`` and ``levels``, finds ``root`` and the split's list file (a missing one raises
    :class:`~common.data.errors.DatasetNotFoundError` naming :attr:`LAYOUT` and ``make`` :attr:`MAKE_TARGET`),
    parses it with :meth:`read`, and hands the images (paths relative to ``root``) and labels to
    :class:`ImageListDataset`. A reader sets the class attributes and writes :meth:`read`.

    Args:
        root: the dataset folder of :attr:`LAYOUT`.
        split: a key of :attr:`SPLIT_FILES`.
        levels: a key of :attr:`LEVELS`, the number of label columns (1 gives labels ``[N]``).
        transform, on_error: see :class:`ImageListDataset`.
    """

    DATASET: ClassVar[str]  # the human name that errors use ("Stanford Online Products")
    LAYOUT: ClassVar[str]  # the expected files under root, shown when one is missing
    MAKE_TARGET: ClassVar[str]  # the make target that fetches the data ("data-sop")
    SPLIT_FILES: ClassVar[Mapping[str, str]]  # split -> its list file, relative to root
    LEVELS: ClassVar[Mapping[int, str]]  # accepted levels -> what the columns hold ("product, category")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        levels: int = 1,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if split not in self.SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(self.SPLIT_FILES)}, got {split!r}")
        if levels not in self.LEVELS:
            known = ", ".join(f"{k} ({what})" for k, what in self.LEVELS.items())
            raise ValueError(f"{self.DATASET} has levels {known}; got levels={levels}")
        self.root = self.require(root)
        self.split, self.levels = split, levels
        rel_paths, labels = self.read(self.require(self.root / self.SPLIT_FILES[split]))
        super().__init__([self.root / p for p in rel_paths], labels, transform=transform, on_error=on_error)

    def require(self, path: str | Path) -> Path:
        """``path`` if it exists, else the :class:`~common.data.errors.DatasetNotFoundError` of this dataset."""
        return require_path(path, dataset=self.DATASET, layout=self.LAYOUT, make_target=self.MAKE_TARGET)

    def read(self, list_file: Path) -> tuple[Sequence[str], np.ndarray]:
        """(image paths relative to ``root``, int64 labels ``[N]`` or ``[N, levels]``) of :attr:`split`."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(list_file)")
