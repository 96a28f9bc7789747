"""The paper's transform recipes: output sizes and the square test resize of SOP."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from roadmap.transforms import RECIPES, paper_transforms


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_output_sizes(recipe):
    img = Image.new("RGB", (400, 300))
    size = RECIPES[recipe]["size"]
    for train in (True, False):
        out = paper_transforms(train, recipe=recipe)(img)
        assert out.shape == (3, size, size) and out.dtype == torch.float32


def test_sop_test_resize_is_square_and_train_crop_scale():
    test_ops = paper_transforms(False, recipe="sop").transforms
    assert isinstance(test_ops[0], T.Resize) and list(test_ops[0].size) == [256, 256]
    cub_ops = paper_transforms(False, recipe="cub").transforms
    assert cub_ops[0].size == 256  # short side
    train_ops = paper_transforms(True, recipe="sop_big").transforms
    assert train_ops[0].size == 288
    crop = train_ops[1]
    assert crop.scale == (0.16, 1.0) and crop.ratio == (0.75, 1.33) and list(crop.size) == [256, 256]
    with pytest.raises(ValueError, match="recipe"):
        paper_transforms(True, recipe="nope")
