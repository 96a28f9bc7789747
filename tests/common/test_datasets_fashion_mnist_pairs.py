"""Two-garment Fashion-MNIST (common/data/datasets/fashion_mnist_pairs.py) on IDX files written in the official format
whose every image is unique, so each half of a composed image can be traced back to its source."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.datasets.fashion_mnist_pairs import PAIRS, FashionMNISTPairs, m_per_pair_sampler, pair_ids
from common.rehearsal.layouts import write_idx

PER_CLASS = {"train": 30, "t10k": 12}


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    """IDX files where image i of a split is filled with a pattern unique to i (pixel [0, 0] = i % 256, [0, 1] =
    i // 256, the rest random), classes interleaved (0, 1, ..., 9, 0, 1, ...)."""
    rng = np.random.default_rng(7)
    for split, per_class in PER_CLASS.items():
        n = 10 * per_class
        labels = np.tile(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 255, size=(n, 28, 28)).astype(np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels, compress=False)
    return tmp_path


def _source_index(half: np.ndarray) -> int:
    return int(half[0, 0]) + 256 * int(half[0, 1])


def test_labels_are_both_classes_and_halves_are_the_source_images(fmnist_root: Path) -> None:
    from common.data.datasets.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist(fmnist_root, "train")
    ds = FashionMNISTPairs(fmnist_root, "train", per_pair=3, seed=1)
    assert len(ds) == 45 * 3 and ds.images.shape == (135, 28, 56) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == torch.bool and ds.labels.shape == (135, 10)
    for i in range(len(ds)):
        left, right = ds.images[i, :, :28], ds.images[i, :, 28:]
        src_l, src_r = _source_index(left), _source_index(right)
        assert (src_l, src_r) == tuple(ds.sources[i])
        np.testing.assert_array_equal(left, images[src_l])
        np.testing.assert_array_equal(right, images[src_r])
        assert tuple(ds.classes[i]) == (labels[src_l], labels[src_r])
        assert labels[src_l] != labels[src_r]  # never two garments of the same class
        assert sorted(np.flatnonzero(ds.labels[i].numpy()).tolist()) == sorted([labels[src_l], labels[src_r]])
        assert ds.pair_ids[i] == PAIRS.index(tuple(sorted((int(labels[src_l]), int(labels[src_r])))))
    # every unordered pair per_pair times, each source image at most once, both sides used
    assert Counter(ds.pair_ids.tolist()) == {p: 3 for p in range(45)}
    assert len(set(ds.sources.flatten().tolist())) == ds.sources.size
    assert 0 < (ds.classes[:, 0] > ds.classes[:, 1]).sum() < len(ds)
    item = ds[5]
    assert item["image"].shape == (1, 28, 56) and item["index"] == 5 and torch.equal(item["label"], ds.labels[5])
    assert torch.allclose(item["image"][0], torch.from_numpy(ds.images[5]).float() / 255)


def test_deterministic_from_the_seed(fmnist_root: Path) -> None:
    a, b = FashionMNISTPairs(fmnist_root, "test", per_pair=1, seed=3), FashionMNISTPairs(fmnist_root, "test", 1, 3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.sources, b.sources)
    assert torch.equal(a.labels, b.labels)
    c = FashionMNISTPairs(fmnist_root, "test", per_pair=1, seed=4)
    assert not np.array_equal(a.sources, c.sources)
    assert Counter(c.pair_ids.tolist()) == Counter(a.pair_ids.tolist())  # another draw of the same balanced pairs


def test_pair_label_format_and_source_subset(fmnist_root: Path) -> None:
    multi = FashionMNISTPairs(fmnist_root, "train", per_pair=2, seed=0, source_per_class=20)
    pair = FashionMNISTPairs(fmnist_root, "train", per_pair=2, seed=0, source_per_class=20, label_format="pair")
    np.testing.assert_array_equal(multi.images, pair.images)
    assert pair.labels.dtype == torch.int64 and pair.labels.shape == (90,)
    assert torch.equal(pair.labels, pair_ids(multi.labels))
    assert set(multi.sources.flatten().tolist()) <= set(range(200))  # the first 20 of each interleaved class


def test_clear_errors(fmnist_root: Path) -> None:
    with pytest.raises(ValueError, match=r"per_pair=2 needs 18 images of class 0 .* offers 12"):
        FashionMNISTPairs(fmnist_root, "test", per_pair=2)
    with pytest.raises(ValueError, match="label_format"):
        FashionMNISTPairs(fmnist_root, "test", per_pair=1, label_format="onehot")
    with pytest.raises(ValueError, match="exactly two classes"):
        pair_ids(torch.eye(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="pair ids lie in 0..44"):
        pair_ids(torch.tensor([3, 45]))


def test_pair_ids_cover_every_unordered_pair() -> None:
    assert PAIRS == tuple(combinations(range(10), 2)) and len(PAIRS) == 45
    multi = torch.zeros(45, 10, dtype=torch.bool)
    for i, (a, b) in enumerate(PAIRS):
        multi[i, a] = multi[i, b] = True
    assert pair_ids(multi).tolist() == list(range(45))


def test_both_label_formats_draw_the_same_batches(fmnist_root: Path) -> None:
    ds = FashionMNISTPairs(fmnist_root, "train", per_pair=3, seed=0)
    kw = dict(batch_size=12, m=3, seed=5)
    from_multi = list(m_per_pair_sampler(labels=ds.multihot, **kw))
    from_pairs = list(m_per_pair_sampler(labels=ds.pair_ids, **kw))
    assert from_multi == from_pairs and len(from_multi) == len(ds) // 12
    for batch in from_multi:  # m items of each of batch_size / m pairs
        assert sorted(Counter(ds.pair_ids[batch].tolist()).values()) == [3, 3, 3, 3]
