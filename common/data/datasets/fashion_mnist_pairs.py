"""Multi-label Fashion-MNIST: two garments side by side, labelled with both classes (the multi-label demo's data).

Each item is a ``[28, 56]`` grayscale image: one Fashion-MNIST image of class ``a`` and one of class ``b`` placed
left and right, read from the official IDX files (:func:`~common.data.datasets.fashion_mnist.load_fashion_mnist`,
same layout and ``make data-fashion-mnist``). Its label is the set ``{a, b}``:

* ``label_format="multihot"``: boolean ``[N, 10]`` with two ``True`` (the multi-label relevance of
  :mod:`common.metrics.relevance`: two items share ``t = |{a, b} ∩ {a', b'}|`` in 0, 1, 2 labels);
* ``label_format="pair"``: the pair id, int64 ``[N]`` in ``0..44``, the index of ``(min, max)`` in :data:`PAIRS`
  (binary relevance: the same pair of labels or not).

Composition, deterministic from ``seed`` (``numpy.random.default_rng``):

1. ``per_pair`` items for each of the 45 unordered pairs of *distinct* classes, in a shuffled order;
2. each item takes the next unused image of each of its two classes from a per-class permutation of the split's
   images (optionally its first ``source_per_class`` images of each class), so no garment image appears twice in
   a split, and train and test items come from the official train and test files;
3. a fair coin puts the first or the second class on the left: labels are sets, the position carries no label.

Pairs of the same class are not made: such an image would carry one label, so "shares both labels with the query"
would have no meaning for it and the number of labels per item would vary (1 or 2). Every item has exactly two
labels, and sharing both labels is the same as having the same pair id.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from common.data.errors import check_labels
from common.data.samplers import MPerClassBatchSampler

NUM_CLASSES = len(FASHION_MNIST_CLASSES)
# the 45 unordered pairs of distinct classes, (a, b) with a < b; the pair id is the index in this tuple
PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(range(NUM_CLASSES), 2))
_PAIR_ID = {p: i for i, p in enumerate(PAIRS)}
LABEL_FORMATS = ("multihot", "pair")


def compose_pairs(
    labels: np.ndarray, per_pair: int, seed: int, source_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(sources [N, 2], classes [N, 2])``: for each item, the indices of its left and right source images and their
    classes, N = 45 x ``per_pair`` (see the module docstring). ``labels [M]`` are the source images' classes."""
    if per_pair < 1:
        raise ValueError(f"per_pair must be at least 1, got {per_pair}")
    rng = np.random.default_rng(seed)
    needed = (NUM_CLASSES - 1) * per_pair  # each class is in 9 pairs
    pools = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        if source_per_class is not None:
            idx = idx[:source_per_class]
        if len(idx) < needed:
            raise ValueError(
                f"per_pair={per_pair} needs {needed} images of class {c} ({FASHION_MNIST_CLASSES[c]}), each used "
                f"once, but the split offers {len(idx)}: lower per_pair or raise source_per_class"
            )
        pools.append(rng.permutation(idx))
    pairs = np.repeat(np.asarray(PAIRS, dtype=np.int64), per_pair, axis=0)[rng.permutation(len(PAIRS) * per_pair)]
    swap = rng.random(len(pairs)) < 0.5
    classes = np.where(swap[:, None], pairs[:, ::-1], pairs)  # [N, 2] left, right
    used = np.zeros(NUM_CLASSES, dtype=np.int64)
    sources = np.empty_like(classes)
    for i, (left, right) in enumerate(classes):  # in item order: the next unused image of each class
        sources[i] = pools[left][used[left]], pools[right][used[right]]
        used[left] += 1
        used[right] += 1
    return sources, classes


def multihot(classes: np.ndarray) -> np.ndarray:
    """``[N, 2]`` class ids -> boolean ``[N, 10]`` multi-hot labels."""
    out = np.zeros((len(classes), NUM_CLASSES), dtype=bool)
    out[np.arange(len(classes))[:, None], classes] = True
    return out


def pair_ids(labels) -> torch.Tensor:
    """int64 ``[N]`` pair ids from either label format: pair ids ``[N]`` (returned as they are) or boolean
    ``[N, 10]`` multi-hot labels with exactly two classes per item."""
    t = check_labels(labels, allow_hierarchical=False, allow_multilabel=True)
    if t.dtype != torch.bool:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(PAIRS)):
            raise ValueError(f"pair ids lie in 0..{len(PAIRS) - 1}, got [{int(t.min())}, {int(t.max())}]")
        return t.long()
    if t.shape[1] != NUM_CLASSES or not bool((t.sum(1) == 2).all()):
        raise ValueError(
            f"multi-hot pair labels are boolean [N, {NUM_CLASSES}] with exactly two classes per item, got shape "
            f"{tuple(t.shape)} with {sorted(set(t.sum(1).tolist()))} classes per item"
        )
    cls = t.nonzero()[:, 1].view(-1, 2)  # [N, 2], increasing within a row
    return torch.tensor([_PAIR_ID[(int(a), int(b))] for a, b in cls.tolist()], dtype=torch.long)


def m_per_pair_sampler(labels, batch_size: int, m: int, **kwargs) -> MPerClassBatchSampler:
    """An m-per-class batch sampler over the pair ids, whatever the label format (factory for the datamodule's
    ``sampler``): a multi-label run and a pair-id run with the same seed draw the same batches."""
    return MPerClassBatchSampler(labels=pair_ids(labels), batch_size=batch_size, m=m, **kwargs)


class FashionMNISTPairs(Dataset):
    """Two Fashion-MNIST garments side by side, as dicts ``{"image", "label", "index"}`` (module docstring).

    Args:
        root: folder holding the four Fashion-MNIST IDX files.
        split: "train" or "test" (the official files the garments come from).
        per_pair: items per unordered pair of distinct classes (N = 45 x per_pair).
        seed: the composition's seed.
        label_format: "multihot" (boolean ``[N, 10]``) or "pair" (int64 pair ids ``[N]``).
        source_per_class: draw the garments from the first ``source_per_class`` images of each class only.
        transform: applied to the ``[28, 56]`` grayscale PIL image (default: float tensor ``[1, 28, 56]`` in [0, 1]).

    Attributes: ``images`` uint8 ``[N, 28, 56]``; ``classes`` int64 ``[N, 2]`` (left, right); ``sources`` int64
    ``[N, 2]`` (their indices in the split's IDX file); ``multihot`` bool ``[N, 10]``; ``pair_ids`` int64 ``[N]``;
    ``labels`` (one of the two, by ``label_format``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        per_pair: int = 20,
        seed: int = 0,
        label_format: str = "multihot",
        source_per_class: int | None = None,
        transform: Callable | None = None,
    ) -> None:
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
        images, labels = load_fashion_mnist(root, split)
        self.sources, self.classes = compose_pairs(labels, per_pair, seed, source_per_class)
        self.images = np.concatenate([images[self.sources[:, 0]], images[self.sources[:, 1]]], axis=2)  # [N, 28, 56]
        self.multihot = torch.from_numpy(multihot(self.classes))
        self.pair_ids = pair_ids(self.multihot)
        self.labels = self.multihot if label_format == "multihot" else self.pair_ids
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        if self.transform is not None:
            x = self.transform(Image.fromarray(self.images[i], mode="L"))
        else:
            x = torch.from_numpy(self.images[i]).float().div_(255.0).unsqueeze(0)
        return {"image": x, "label": self.labels[i], "index": i}
