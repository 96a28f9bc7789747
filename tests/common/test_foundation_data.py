"""Fashion-MNIST reader, base dataset errors, synthetic data, samplers and the datamodule."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.data.datamodule import RetrievalDataModule
from common.data.datasets.base import CorruptImageError, ImageListDataset
from common.data.datasets.fashion_mnist import (
    FASHION_MNIST_HIERARCHY,
    FashionMNIST,
    hierarchical_labels,
    load_fashion_mnist,
    read_idx,
)
from common.data.datasets.synthetic import SyntheticImages
from common.data.errors import DatasetNotFoundError, check_labels
from common.data.samplers import MPerClassBatchSampler, RandomBatchSampler
from common.data.splits import EvalSplit
from tests.conftest import make_tiny_fashion_mnist, write_idx

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 255, size=(5, 7, 3)).astype(np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, compress=compress)
    out = read_idx(path)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_read_idx_truncated_names_file(tmp_path):
    arr = np.zeros((4, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", arr, compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated.*make data-fashion-mnist"):
        read_idx(path)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04garbage"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)


def test_missing_data_dir_names_layout_and_target(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist(tmp_path / "nope", "train")
    msg = str(e.value)
    assert "make data-fashion-mnist" in msg and "train-images-idx3-ubyte" in msg
    (tmp_path / "half").mkdir()
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path / "half", "train")


def test_fashion_mnist_dataset_items_and_hierarchy(tiny_fmnist):
    ds = FashionMNIST(tiny_fmnist / "fashion-mnist", "train", levels=2)
    assert len(ds) == 60
    item = ds[13]
    assert item["image"].shape == (1, 28, 28) and item["index"] == 13
    assert item["label"].tolist() == [int(ds.labels[13, 0]), FASHION_MNIST_HIERARCHY[int(ds.labels[13, 0])]]
    # subset and class filter
    sub = FashionMNIST(tiny_fmnist / "fashion-mnist", "train", classes=[0, 5], subset=2)
    assert sorted(sub.labels.tolist()) == [0, 0, 5, 5]


def test_hierarchy_groups_are_sensible():
    fine = np.arange(10)
    h = hierarchical_labels(fine)
    groups = {g: {int(c) for c in fine[h[:, 1] == g]} for g in range(4)}
    assert groups[0] == {0, 2, 4, 6}  # tops
    assert groups[1] == {1, 3}  # trousers, dresses
    assert groups[2] == {5, 7, 9}  # footwear
    assert groups[3] == {8}  # bags


@pytest.mark.skipif(not DEBIAN_FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files():
    images, labels = load_fashion_mnist(DEBIAN_FMNIST, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


def test_corrupt_image_raise_and_skip(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ImageListDataset([good, bad, good], [0, 1, 2])
    with pytest.raises(CorruptImageError, match="bad.jpg.*on_error=skip"):
        ds[1]
    ds = ImageListDataset([good, bad, good], [0, 1, 2], on_error="skip")
    item = ds[1]
    assert item["index"] == 2 and ds.num_skipped == 1 and ds.skipped_paths == [str(bad)]


def test_label_shape_errors():
    assert check_labels(torch.tensor([1, 2])).dtype == torch.long
    assert check_labels(torch.zeros(3, 2, dtype=torch.int32)).shape == (3, 2)
    with pytest.raises(ValueError, match="shape"):
        check_labels(torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        check_labels(torch.zeros(3))
    with pytest.raises(ValueError, match="paths but"):
        ImageListDataset(["a", "b"], [0])


def _sampler(world_size=1, rank=0, seed=0):
    labels = torch.arange(10).repeat_interleave(20)
    return MPerClassBatchSampler(labels, m=4, batch_size=16, seed=seed, rank=rank, world_size=world_size), labels


def test_m_per_class_batches_and_epochs():
    s, labels = _sampler()
    batches = list(s)
    assert len(batches) == len(s) == 200 // 16
    for b in batches:
        counts = torch.bincount(labels[b], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4, 4]
    again = list(_sampler()[0])
    assert again == batches  # same seed, same epoch: same batches
    s.set_epoch(1)
    assert list(s) != batches  # a new epoch reshuffles


def test_m_per_class_ranks_are_disjoint_and_whole():
    s0, _ = _sampler(world_size=2, rank=0)
    s1, _ = _sampler(world_size=2, rank=1)
    full, _ = _sampler()
    b0, b1 = list(s0), list(s1)
    assert len(b0) == len(b1) == len(s0)
    assert b0 == full.global_batches()[0::2][: len(b0)] and b1 == full.global_batches()[1::2][: len(b1)]
    with pytest.raises(ValueError, match="multiple of m"):
        MPerClassBatchSampler(torch.arange(10), m=3, batch_size=16)
    with pytest.raises(ValueError, match="only 10 classes"):
        MPerClassBatchSampler(torch.arange(10).repeat(4), m=2, batch_size=32)


def test_random_batch_sampler_partitions():
    s = RandomBatchSampler(50, 8)
    flat = [i for b in s for i in b]
    assert len(flat) == 48 and len(set(flat)) == 48


def test_datamodule_protocols():
    train, test = SyntheticImages(per_class=4), SyntheticImages(per_class=2, seed=1)
    dm = RetrievalDataModule(train, test_dataset=test, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].shape == (8,)
    assert dm.test_splits == [EvalSplit("test", "id")]
    dm2 = RetrievalDataModule(train, query_dataset=test, gallery_dataset=train, batch_size=8)
    assert len(dm2.test_dataloader()) == 2 and [s.name for s in dm2.test_splits] == ["query", "gallery"]
    with pytest.raises(ValueError, match="either test_dataset"):
        RetrievalDataModule(train, batch_size=8)


def test_tiny_fixture_writer(tmp_path):
    root = make_tiny_fashion_mnist(tmp_path, per_class=3)
    images, labels = load_fashion_mnist(root, "train")
    assert images.shape == (30, 28, 28) and np.bincount(labels).tolist() == [3] * 10
