"""Image transforms, resolved from the backbone's pretrained config where there is one.

- :func:`timm_transforms`: timm's ``resolve_data_config`` for a model name (size, interpolation, mean/std, crop).
- :func:`retrieval_transforms`: the ROADMAP/HAPPIER recipe (RandomResizedCrop + flip for train, Resize + CenterCrop
  for test) with explicit size and normalisation.
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


def retrieval_transforms(
    train: bool,
    size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """RandomResizedCrop(size) + horizontal flip (train), or Resize(resize) + CenterCrop(size) (test)."""
    if train:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(resize), T.CenterCrop(size)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


def grayscale_transforms(
    train: bool,
    size: int = 28,
    padding: int = 2,
    mean: Sequence[float] = FASHION_MNIST_MEAN,
    std: Sequence[float] = FASHION_MNIST_STD,
) -> T.Compose:
    """Small single-channel images: RandomCrop(size, padding) + flip for train; plain tensor + normalise for test."""
    ops = [T.RandomCrop(size, padding=padding), T.RandomHorizontalFlip()] if train else []
    if not train and size != 28:
        ops = [T.Resize(size)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])
