"""Cluttered Fashion-MNIST scenes: deterministic per seed, labels and layouts right, held-out classes kept out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.data.datasets.fmnist_scenes import (
    HELD_OUT_CLASSES,
    ID_CLASSES,
    FashionMNISTScenes,
    SceneConfig,
    paste_item,
    place,
)
from common.data.errors import DatasetNotFoundError
from gallop.transforms import clip_transform


@pytest.fixture
def root(tiny_fmnist):
    return tiny_fmnist / "fashion-mnist"


def test_items_shapes_and_labels_in_blocks(root):
    ds = FashionMNISTScenes(root, "train", ID_CLASSES, per_class=3, seed=0)
    assert len(ds) == 24 and ds.labels.dtype == torch.long
    assert ds.labels.tolist() == [c for c in ID_CLASSES for _ in range(3)]
    item = ds[5]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert int(item["label"]) == 1 and item["index"] == 5
    tf = clip_transform(False, 64, (0.5,) * 3, (0.5,) * 3, "bilinear")
    assert FashionMNISTScenes(root, "test", (0, 1), per_class=2, transform=tf)[0]["image"].shape == (3, 64, 64)


def test_deterministic_per_seed_and_independent_of_read_order(root):
    a = FashionMNISTScenes(root, "test", ID_CLASSES, per_class=2, seed=3)
    b = FashionMNISTScenes(root, "test", ID_CLASSES, per_class=2, seed=3)
    c = FashionMNISTScenes(root, "test", ID_CLASSES, per_class=2, seed=4)
    forward = [a.render(i) for i in range(len(a))]
    backward = [b.render(i) for i in reversed(range(len(b)))][::-1]
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(x, y)
    assert a.layout(7) == b.layout(7)
    assert any(not np.array_equal(x, c.render(i)) for i, x in enumerate(forward))
    v = FashionMNISTScenes(root, "val", ID_CLASSES, per_class=2, seed=3)
    t = FashionMNISTScenes(root, "train", ID_CLASSES, per_class=2, seed=3)
    assert any(v.layout(i) != t.layout(i) for i in range(len(v)))  # val is another scene stream


def test_labelled_item_is_the_largest_complete_item_of_the_label_class(root):
    cfg = SceneConfig()
    ds = FashionMNISTScenes(root, "train", ID_CLASSES, per_class=4, seed=1, config=cfg)
    for i in range(len(ds)):
        lay = ds.layout(i)
        main, others = lay.items[0], lay.items[1:]
        assert lay.label == main.cls == int(ds.labels[i])
        assert cfg.n_distractors[0] <= len(others) <= cfg.n_distractors[1]
        assert cfg.main_size[0] <= main.size <= cfg.main_size[1]
        assert 0 <= main.x <= cfg.canvas - main.size and 0 <= main.y <= cfg.canvas - main.size  # never cut
        for d in others:
            assert d.size < main.size and d.cls != main.cls and d.cls in ID_CLASSES
        assert cfg.noise_std[0] <= lay.noise_std <= cfg.noise_std[1]


def test_distinct_labelled_items_within_a_class(root):
    ds = FashionMNISTScenes(root, "train", (0,), per_class=6, seed=0)  # the tiny files hold 6 items per class
    assert sorted(ds.layout(i).items[0].item for i in range(6)) == sorted(ds._by_class[0].tolist())


def test_scene_pixels_come_from_its_items(root):
    """Without noise, a scene is the pixel-wise max of its items pasted alone."""
    cfg = SceneConfig(noise_std=(0.0, 0.0))
    ds = FashionMNISTScenes(root, "test", ID_CLASSES, per_class=2, seed=2, config=cfg)
    for i in (0, 9):
        lay = ds.layout(i)
        layers = []
        for it in lay.items:
            c = torch.zeros(64, 64)
            paste_item(c, ds.images[it.item].float() / 255, it.x, it.y, it.size, it.flip, it.intensity)
            layers.append(c)
        expected = (torch.stack(layers).amax(0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(ds.render(i), expected)
        assert layers[0].sum() > 0  # the labelled item is drawn


def test_held_out_classes_never_in_id_scenes_and_ood_scenes_share_the_clutter(root):
    idd = FashionMNISTScenes(root, "test", ID_CLASSES, per_class=3, seed=0)
    ood = FashionMNISTScenes(root, "test", HELD_OUT_CLASSES, per_class=3, seed=0)
    for i in range(len(idd)):
        assert all(it.cls in ID_CLASSES for it in idd.layout(i).items)
    for i in range(len(ood)):
        lay = ood.layout(i)
        assert lay.items[0].cls in HELD_OUT_CLASSES and all(it.cls in ID_CLASSES for it in lay.items[1:])
    assert set(ood.labels.tolist()) == set(HELD_OUT_CLASSES)


def test_paste_and_place_crop_partial_items():
    item = torch.ones(28, 28)
    c = paste_item(torch.zeros(10, 10), item, x=-4, y=6, size=8)
    assert c[6:, :4].min() == 1.0 and c[:6].max() == 0.0 and c[:, 4:].max() == 0.0
    assert place(torch.zeros(4, 4), torch.ones(2, 2), 5, 5).max() == 0.0  # fully outside: unchanged
    ref = F.interpolate(torch.full((1, 1, 28, 28), 0.5), size=(8, 8), mode="bilinear", antialias=True)[0, 0]
    np.testing.assert_allclose(paste_item(torch.zeros(8, 8), torch.full((28, 28), 0.5), 0, 0, 8), ref, atol=1e-6)


def test_bad_arguments_are_named(root, tmp_path):
    with pytest.raises(ValueError, match="largest"):
        SceneConfig(main_size=(20, 30), distractor_size=(12, 22))
    with pytest.raises(ValueError, match="split"):
        FashionMNISTScenes(root, "dev")
    with pytest.raises(ValueError, match="distractor class"):
        FashionMNISTScenes(root, "test", (3,), distractor_classes=(3,))
    with pytest.raises(DatasetNotFoundError, match="make data-fashion-mnist"):
        FashionMNISTScenes(tmp_path / "missing")
