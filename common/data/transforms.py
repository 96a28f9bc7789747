"""Image transforms, resolved from the backbone's pretrained config where there is one.

- :func:`timm_transforms`: timm's ``resolve_data_config`` for a model name (size, interpolation, mean/std, crop).
- :func:`paper_transforms`: the ROADMAP/HAPPIER recipes (:data:`RECIPES`: ``sop``, ``sop_big``, ``cub``, ``cub_big``,
  ``inat``, ``inshop_big``): RandomResizedCrop + flip for train, Resize + CenterCrop for test, ImageNet mean/std.
- :func:`grayscale_transforms`: small grayscale images (Fashion-MNIST): pad-and-crop + flip for train.
- open_clip's preprocess comes with the model (``common/backbones/clip.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def timm_transforms(model_name: str, train: bool = False, **overrides) -> T.Compose:
    """The transform timm uses for ``model_name``'s pretrained weights (``overrides`` e.g. ``input_size``)."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    data_cfg = resolve_data_config(dict(overrides), pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    return create_transform(**data_cfg, is_training=train)


#: The ROADMAP/HAPPIER papers' recipes (ROADMAP, Ramzi et al., NeurIPS 2021, Sec. 4 and its released configs).
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
    """The retrieval papers' transform for PIL images; ``recipe`` (a key of :data:`RECIPES`) sets the sizes.

    Train: [Resize(pre_resize)] + RandomResizedCrop(size, scale, ratio) + horizontal flip.
    Test: Resize(resize) (a square ``[resize, resize]`` when ``square_resize``, as SOP does) + CenterCrop(size).
    Both end with ToTensor + Normalize(mean, std).
    """
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


def grayscale_transforms(
    train: bool,
    size: int | Sequence[int] = 28,
    padding: int = 2,
    mean: Sequence[float] = FASHION_MNIST_MEAN,
    std: Sequence[float] = FASHION_MNIST_STD,
) -> T.Compose:
    """Small single-channel images: RandomCrop(size, padding) + flip for train; plain tensor + normalise for test.

    ``size``: an int (square) or ``(height, width)``, e.g. ``(28, 56)`` for two garments side by side."""
    size = size if isinstance(size, int) else tuple(size)
    ops = [T.RandomCrop(size, padding=padding), T.RandomHorizontalFlip()] if train else []
    if not train and size != 28:
        ops = [T.Resize(size)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])
