import pickle

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from common.data.datasets.cifar import CIFAR, load_cifar
from common.data.datasets.imagenet_ood import ImageNetOOD, ImageNetTrain, ImageNetVal
from common.data.datasets.ood_folders import DTD, LSUN, Places365, TinyImageNet
from common.data.datasets.svhn import SVHN, load_svhn
from common.data.errors import DatasetNotFoundError


def _img(path, color=(10, 20, 30), size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _cifar_batch(path, n, fine, coarse=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    d = {b"data": data, (b"labels" if coarse is None else b"fine_labels"): list(fine)}
    if coarse is not None:
        d[b"coarse_labels"] = list(coarse)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return data


def test_cifar10_and_100_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    datas = [_cifar_batch(base / f"data_batch_{i}", 4, [i % 10] * 4, seed=i) for i in range(1, 6)]
    _cifar_batch(base / "test_batch", 3, [7, 8, 9])
    x, y = load_cifar(tmp_path, "cifar10", "train")
    assert x.shape == (20, 32, 32, 3) and y.tolist() == sum([[i] * 4 for i in range(1, 6)], [])
    # channel-major rows -> HWC: pixel (0, 0) of image 0 = bytes 0, 1024, 2048
    assert tuple(x[0, 0, 0]) == (datas[0][0, 0], datas[0][0, 1024], datas[0][0, 2048])
    ds = CIFAR(tmp_path, "cifar10", "test")
    item = ds[2]
    assert item["label"] == 9 and item["image"].size == (32, 32) and item["index"] == 2
    _cifar_batch(tmp_path / "cifar-100-python" / "train", 5, [3, 4, 5, 6, 7], coarse=[0, 1, 1, 2, 2])
    x, y = load_cifar(tmp_path, "cifar100", "train", levels=2)
    assert y.shape == (5, 2) and y[:, 1].tolist() == [0, 1, 1, 2, 2]
    with pytest.raises(DatasetNotFoundError, match="make data-cifar100"):
        load_cifar(tmp_path / "nowhere", "cifar100", "test")
    with pytest.raises(ValueError, match="only for CIFAR-100"):
        load_cifar(tmp_path, "cifar10", "train", levels=2)


def test_svhn_mat(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [5], [10]], dtype=np.uint8)})
    imgs, y = load_svhn(tmp_path, "test")
    assert imgs.shape == (4, 32, 32, 3) and y.tolist() == [0, 1, 5, 0]
    np.testing.assert_array_equal(imgs[2], x[..., 2])
    assert SVHN(tmp_path)[1]["label"] == 1
    with pytest.raises(DatasetNotFoundError, match="data-svhn"):
        load_svhn(tmp_path, "train")


def test_dtd_places_lsun_tin(tmp_path):
    for c in ("banded", "zigzagged"):
        for i in range(2):
            _img(tmp_path / "dtd" / "images" / c / f"{c}_{i}.jpg")
    (tmp_path / "dtd" / "labels").mkdir()
    (tmp_path / "dtd" / "labels" / "test1.txt").write_text("zigzagged/zigzagged_1.jpg\nbanded/banded_0.jpg\n")
    d = DTD(tmp_path, split="test", partition=1)
    assert len(d) == 2 and d.labels.tolist() == [1, 0] and d[0]["image"].size == (8, 6)
    assert len(DTD(tmp_path, split="all")) == 4
    with pytest.raises(DatasetNotFoundError, match="train2.txt"):
        DTD(tmp_path, split="train", partition=2)

    for i in (1, 2):
        _img(tmp_path / "places365" / "val_256" / f"Places365_val_0000000{i}.jpg")
    (tmp_path / "places365" / "places365_val.txt").write_text(
        "Places365_val_00000001.jpg 165\nPlaces365_val_00000002.jpg 3\n"
    )
    p = Places365(tmp_path)
    assert p.labels.tolist() == [165, 3] and p[1]["label"] == 3

    for cat in ("bedroom", "tower"):
        for i in range(3):
            _img(tmp_path / "LSUN" / cat / f"{i}.webp")
    ls = LSUN(tmp_path, per_category=2)
    assert len(ls) == 4 and (ls.labels == -1).all()

    tin = tmp_path / "tiny-imagenet-200"
    (tin).mkdir()
    (tin / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        _img(tin / "train" / w / "images" / f"{w}_0.JPEG")
    _img(tin / "val" / "images" / "val_0.JPEG")
    (tin / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\n")
    for i in range(3):
        _img(tin / "test" / "images" / f"test_{i}.JPEG")
    assert len(TinyImageNet(tmp_path, "test")) == 3
    assert TinyImageNet(tmp_path, "val").labels.tolist() == [1]
    assert TinyImageNet(tmp_path, "train").labels.tolist() == [0, 1]


def test_imagenet_val_and_mos_ood(tmp_path):
    for split in ("train", "val"):
        for w in ("n02", "n01"):
            _img(tmp_path / "imagenet" / split / w / f"{w}_a.JPEG")
    v = ImageNetVal(tmp_path)
    assert v.wnids == ["n01", "n02"] and v.labels.tolist() == [0, 1]
    assert len(ImageNetTrain(tmp_path)) == 2
    for sub in ("iNaturalist/images", "SUN/images", "Places/images", "dtd/images/banded"):
        _img(tmp_path / "ood_data" / sub / "x.jpg")
    for name in ("inaturalist", "sun", "places", "textures"):
        ds = ImageNetOOD(tmp_path, name)
        assert len(ds) == 1 and ds[0]["label"] == -1
    with pytest.raises(ValueError, match="must be one of"):
        ImageNetOOD(tmp_path, "openimage")
