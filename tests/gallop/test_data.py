"""CoOp readers, ImageNet DG / OOD readers (on fixture trees written here) and few-shot sampling."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from common.data.datasets.coop import COOP_DATASETS, CoOpDataset, class_names_from_rows, read_split_zhou
from common.data.datasets.imagenet_dg import ImageNetDG
from common.data.datasets.imagenet_ood import ImageNetOOD
from common.data.errors import DatasetNotFoundError
from common.data.splits import EvalSplit
from gallop.fewshot import (
    FewShotDataModule,
    RemapClasses,
    coop_exact_k,
    gallop_stratified,
    load_or_create_split,
    split_file,
)
from tests.gallop.helpers import TensorImages


def _img(path, color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _write_coop(root, name, rows_by_split):
    lay = COOP_DATASETS[name]
    base = root / lay.folder
    img_dir = base / lay.image_dir if lay.image_dir else base
    for rows in rows_by_split.values():
        for rel, label, _ in rows:
            _img(img_dir / rel, (label * 40, 0, 0))
    (base / lay.split_file).write_text(json.dumps({k: [list(r) for r in v] for k, v in rows_by_split.items()}))


ROWS = {
    "train": [
        ("Apply_Eye_Makeup/a.jpg", 0, "Apply_Eye_Makeup"),
        ("Archery/b.jpg", 1, "Archery"),
        ("Archery/c.jpg", 1, "Archery"),
    ],
    "val": [("Apply_Eye_Makeup/d.jpg", 0, "Apply_Eye_Makeup")],
    "test": [("Archery/e.jpg", 1, "Archery"), ("Bowling/f.jpg", 2, "Bowling")],
}


@pytest.mark.parametrize("name", [n for n, lay in COOP_DATASETS.items() if lay.split_file])
def test_coop_reader_on_fixture_tree(tmp_path, name):
    _write_coop(tmp_path, name, ROWS)
    ds = CoOpDataset(tmp_path, name, "train")
    assert ds.class_names == ["Apply_Eye_Makeup", "Archery", "Bowling"]  # names from all splits, indexed by label
    assert ds.labels.tolist() == [0, 1, 1]
    item = ds[1]
    assert item["label"] == 1 and item["index"] == 1 and item["image"].size == (8, 8)
    assert item["image"].getpixel((0, 0))[0] == 40
    assert CoOpDataset(tmp_path, name, "test").labels.tolist() == [1, 2]


def test_read_split_zhou_rejects_bad_rows(tmp_path):
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": [["a.jpg", "0", "cat"]], "val": [], "test": []}))
    with pytest.raises(ValueError, match=r"train\[0\]"):
        read_split_zhou(f)
    f.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="'val'"):
        read_split_zhou(f)
    with pytest.raises(ValueError, match="two names"):
        class_names_from_rows([("a", 0, "cat"), ("b", 0, "dog")])
    with pytest.raises(ValueError, match="never appear"):
        class_names_from_rows([("a", 1, "cat")])


def test_missing_coop_dataset_names_layout_and_make_target(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="`make data-coop-dtd`") as e:
        CoOpDataset(tmp_path, "dtd", "train")
    assert "split_zhou_DescribableTextures.json" in str(e.value)
    with pytest.raises(ValueError, match="unknown CoOp dataset"):
        CoOpDataset(tmp_path, "cifar10")


def test_fgvc_aircraft_reader(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    (base / "variants.txt").write_text("707-320\nA300B4\nF-16A/B\n")
    (base / "images_variant_trainval.txt").write_text("0001 A300B4\n0002 F-16A/B\n0003 707-320\n")
    for i in ("0001", "0002", "0003"):
        _img(base / "images" / f"{i}.jpg")
    ds = CoOpDataset(tmp_path, "fgvc_aircraft", "trainval")
    assert ds.class_names == ["707-320", "A300B4", "F-16A/B"]
    assert ds.labels.tolist() == [1, 2, 0]
    with pytest.raises(DatasetNotFoundError, match="images_variant_test"):
        CoOpDataset(tmp_path, "fgvc_aircraft", "test")


def _write_imagenet(root):
    wnids = ["n01", "n02", "n03"]
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("n01 tench\nn02 goldfish\nn03 great white shark\n")
    for split in ("train", "val"):
        for w in wnids:
            _img(root / "imagenet" / "images" / split / w / f"{w}_1.JPEG")
    for i in range(3):
        _img(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(i) / "x.jpeg")
    _img(root / "imagenet-sketch" / "images" / "n02" / "s.JPEG")
    for w in ("n01", "n03"):
        _img(root / "imagenet-adversarial" / "imagenet-a" / w / "a.jpg")
        _img(root / "imagenet-rendition" / "imagenet-r" / w / "r.jpg")


def test_imagenet_and_shifted_sets(tmp_path):
    _write_imagenet(tmp_path)
    inet = ImageNetDG(tmp_path, "imagenet", "train")
    assert inet.class_names == ["tench", "goldfish", "great white shark"] and inet.labels.tolist() == [0, 1, 2]
    assert inet.class_subset is None
    assert ImageNetDG(tmp_path, "imagenet_v2").labels.tolist() == [0, 1, 2]
    assert ImageNetDG(tmp_path, "imagenet_sketch").labels.tolist() == [1]
    for name in ("imagenet_a", "imagenet_r"):
        ds = ImageNetDG(tmp_path, name)
        assert ds.labels.tolist() == [0, 2] and ds.class_subset == [0, 2]
    with pytest.raises(DatasetNotFoundError, match="`make data-imagenet-a`"):  # fetches classnames.txt and the set
        ImageNetDG(tmp_path / "nothing", "imagenet_a")


def test_imagenet_ood_sets_through_the_shared_reader(tmp_path):
    """GalLoP reuses common.data.datasets.imagenet_ood (HEAT's reader) with the layout configs/data/gallop_imagenet.yaml
    assumes: <data_dir>/ood_data/{iNaturalist,SUN,Places}/images, <data_dir>/ood_data/dtd/images/<class>."""
    _img(tmp_path / "ood_data" / "iNaturalist" / "images" / "a.jpg")
    _img(tmp_path / "ood_data" / "iNaturalist" / "images" / "b.jpg")
    _img(tmp_path / "ood_data" / "dtd" / "images" / "banded" / "c.jpg")
    ds = ImageNetOOD(tmp_path, "inaturalist")
    assert len(ds) == 2 and ds.labels.tolist() == [-1, -1]
    assert len(ImageNetOOD(tmp_path, "textures")) == 1
    with pytest.raises(DatasetNotFoundError, match="places"):
        ImageNetOOD(tmp_path, "places")


# ------------------------------------------------------------------ few-shot sampling
LABELS = np.repeat(np.arange(5), [3, 10, 20, 40, 1])  # unbalanced, one class smaller than K


def test_coop_exact_k_gives_exactly_k_per_class():
    idx = coop_exact_k(LABELS, 4, seed=1)
    counts = Counter(LABELS[idx].tolist())
    assert counts == {0: 3, 1: 4, 2: 4, 3: 4, 4: 1}  # all of a class smaller than K
    assert len(set(idx.tolist())) == len(idx)
    assert np.array_equal(idx, coop_exact_k(LABELS, 4, seed=1))
    assert not np.array_equal(idx, coop_exact_k(LABELS, 4, seed=2))


def test_gallop_stratified_is_proportional_like_sklearn():
    from sklearn.model_selection import StratifiedShuffleSplit

    y = np.repeat(np.arange(4), [4, 8, 16, 92])
    idx = gallop_stratified(y, 2, seed=1)
    ref = np.sort(next(StratifiedShuffleSplit(1, train_size=8, random_state=1).split(np.zeros(len(y)), y))[0])
    assert np.array_equal(idx, ref)
    counts = Counter(y[idx].tolist())
    assert len(idx) == 8 and counts[3] > 2 and counts.get(0, 0) < 2  # proportional, not exactly K


def test_split_file_is_written_once_and_reused(tmp_path):
    idx = load_or_create_split(LABELS, 2, 3, "coop_exact_k", tmp_path)
    f = split_file(tmp_path, 2, 3, "coop_exact_k")
    data = json.loads(f.read_text())
    assert data["indices"] == idx.tolist() and data["shots"] == 2 and data["seed"] == 3
    data["indices"] = [0, 1]
    f.write_text(json.dumps(data))
    assert load_or_create_split(LABELS, 2, 3, "coop_exact_k", tmp_path).tolist() == [0, 1]  # read back, not resampled
    with pytest.raises(ValueError, match="another train set"):
        load_or_create_split(LABELS[:-1], 2, 3, "coop_exact_k", tmp_path)
    with pytest.raises(ValueError, match="sampling"):
        load_or_create_split(LABELS, 2, 3, "random", None)


def test_datamodule_few_shot_loaders_and_remap(tmp_path):
    dm = FewShotDataModule(
        TensorImages(10, 4),
        TensorImages(3, 4, seed=1),
        shots=2,
        seed=1,
        batch_size=3,
        eval_batch_size=4,
        split_dir=str(tmp_path),
        ood_datasets={"o": TensorImages(2, 1, seed=2)},
        class_ids=[2, 0],
    )
    dm.setup("fit")
    assert dm.class_names == ["class_2", "class_0"]
    assert Counter(dm.train_dataset.labels.tolist()) == {0: 2, 1: 2}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
    assert dm.test_splits == [EvalSplit("test", "id"), EvalSplit("o", "ood")] and len(dm.test_dataloader()) == 2
    assert sorted(set(dm.test_dataset.labels.tolist())) == [0, 1]
    # RemapClasses keeps the images of the kept classes, relabelled in the given order
    full = TensorImages(3, 4, seed=1)
    rm = RemapClasses(full, [2, 0])
    assert torch.equal(rm[0]["image"], full[0]["image"]) and rm[0]["label"] == 1
