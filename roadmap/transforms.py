"""The ROADMAP paper's image transforms (specs §3.3), ImageNet mean/std, PIL images in.

Train: [Resize(pre_resize)] + RandomResizedCrop(size, scale=(0.16, 1), ratio=(0.75, 1.33)) + horizontal flip.
Test: Resize(resize) (a square ``[resize, resize]`` when ``square_resize``, as SOP does) + CenterCrop(size).

Recipes: ``sop`` (pre 256, crop 224; test square 256 -> 224), ``sop_big`` (pre 288, crop 256; test square 288 -> 256),
``cub``/``inat`` (crop 224; test 256 -> 224), ``cub_big``/``inshop_big`` (crop 256; test 288 -> 256).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD

RECIPES: dict[str, dict] = {
    "sop": {"size": 224, "pre_resize": 256, "resize": 256, "square_resize": True},
    "sop_big": {"size": 256, "pre_resize": 288, "resize": 288, "square_resize": True},
    "cub": {"size": 224, "pre_resize": None, "resize": 256, "square_resize": False},
    "cub_big": {"size": 256, "pre_resize": None, "resize": 288, "square_resize": False},
    "inat": {"size": 224, "pre_resize": None, "resize": 256, "square_resize": False},
    "inshop_big": {"size": 256, "pre_resize": None, "resize": 288, "square_resize": False},
}


def paper_transforms(
    train: bool,
    recipe: str | None = None,
    size: int = 224,
    pre_resize: int | None = None,
    resize: int = 256,
    square_resize: bool = False,
    scale: Sequence[float] = (0.16, 1.0),
    ratio: Sequence[float] = (0.75, 1.33),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Build the train or test transform; ``recipe`` (a key of :data:`RECIPES`) overrides the size arguments."""
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        r = RECIPES[recipe]
        size, pre_resize, resize, square_resize = r["size"], r["pre_resize"], r["resize"], r["square_resize"]
    if train:
        ops = [T.Resize(pre_resize)] if pre_resize else []
        ops += [T.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio)), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize([resize, resize] if square_resize else resize), T.CenterCrop(size)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])
