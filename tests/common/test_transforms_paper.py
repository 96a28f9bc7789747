"""The paper transforms (``common.data.transforms.paper_transforms``): sizes, the square SOP test resize, and the same
pipeline and output as before they moved out of ``roadmap/`` (recorded below from the old module, on a fixed image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RECIPES, paper_transforms

_NORM = "Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))"
_RRC = (
    "RandomResizedCrop(size=({s}, {s}), scale=(0.16, 1.0), ratio=(0.75, 1.33), interpolation=bilinear, antialias=True)"
)
_RESIZE = "Resize(size={r}, interpolation=bilinear, max_size=None, antialias=True)"

# (recipe, train) -> (repr of the ops, sum and abs-sum of the output on _image() after torch.manual_seed(0)),
# recorded with roadmap.transforms.paper_transforms before the move.
BEFORE = {
    ("cub", True): ([_RRC.format(s=224)], 33976.953778, 95251.001856),
    ("cub", False): ([_RESIZE.format(r=256), "CenterCrop(size=(224, 224))"], 33673.660503, 95536.731446),
    ("cub_big", True): ([_RRC.format(s=256)], 44322.411317, 138029.603792),
    ("cub_big", False): ([_RESIZE.format(r=288), "CenterCrop(size=(256, 256))"], 44084.29436, 140361.171601),
    ("sop", True): ([_RESIZE.format(r=256), _RRC.format(s=224)], 33756.140485, 72251.525586),
    ("sop", False): ([_RESIZE.format(r="[256, 256]"), "CenterCrop(size=(224, 224))"], 33565.938742, 83919.542585),
    ("sop_big", True): ([_RESIZE.format(r=288), _RRC.format(s=256)], 44238.372549, 104901.236942),
    ("sop_big", False): ([_RESIZE.format(r="[288, 288]"), "CenterCrop(size=(256, 256))"], 43961.625336, 122134.703411),
}
BEFORE[("inat", True)], BEFORE[("inat", False)] = BEFORE[("cub", True)], BEFORE[("cub", False)]
BEFORE[("inshop_big", True)], BEFORE[("inshop_big", False)] = BEFORE[("cub_big", True)], BEFORE[("cub_big", False)]


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))


def _by_hand(recipe: str, train: bool) -> T.Compose:
    """The recipe written out with torchvision ops (the paper's description), independently of the code under test."""
    r = RECIPES[recipe]
    if train:
        ops = [T.Resize(r["pre_resize"])] if r["pre_resize"] else []
        ops += [T.RandomResizedCrop(r["size"], scale=(0.16, 1.0), ratio=(0.75, 1.33)), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize([r["resize"]] * 2 if r["square_resize"] else r["resize"]), T.CenterCrop(r["size"])]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.mark.parametrize("recipe,train", sorted(BEFORE))
def test_pipeline_and_output_unchanged_by_the_move(recipe, train):
    ops, total, abs_total = BEFORE[(recipe, train)]
    t = paper_transforms(train, recipe=recipe)
    flip = ["RandomHorizontalFlip(p=0.5)"] if train else []
    assert [repr(op) for op in t.transforms] == [*ops, *flip, "ToTensor()", _NORM]
    torch.manual_seed(0)
    out = t(_image())
    torch.manual_seed(0)
    assert torch.equal(out, _by_hand(recipe, train)(_image()))
    size = RECIPES[recipe]["size"]
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert float(out.double().sum()) == pytest.approx(total, rel=1e-5)
    assert float(out.double().abs().sum()) == pytest.approx(abs_total, rel=1e-5)


def test_explicit_sizes_replace_the_old_retrieval_transforms():
    """HAPPIER's CLIP encoder: Resize(s) + CenterCrop(s) + CLIP mean/std, as the removed ``retrieval_transforms`` did."""
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    t = paper_transforms(False, size=224, resize=224, mean=mean, std=std)
    expected = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean, std)])
    assert repr(t) == repr(expected)
    out = t(_image())
    assert torch.equal(out, expected(_image()))
    assert float(out.double().sum()) == pytest.approx(27938.411146, rel=1e-5)  # recorded from the old function


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        paper_transforms(True, recipe="nope")
