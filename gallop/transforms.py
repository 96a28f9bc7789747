"""CLIP image transforms used by GalLoP and CoOp.

- train: ``RandomResizedCrop(size, scale=(0.08, 1), bicubic)``, horizontal flip, CLIP mean/std
  (the GalLoP paper's training recipe, docs/methods/gallop.md#defaults);
- test: ``Resize(size, bicubic)`` + ``CenterCrop(size)`` (CLIP's ``_transform``).

Images are converted to RGB first (Fashion-MNIST is grayscale).
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torchvision.transforms as T

_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def _rgb(image):
    return image.convert("RGB")


def clip_transform(
    train: bool,
    image_size: int = 224,
    mean: Sequence[float] = open_clip.OPENAI_DATASET_MEAN,
    std: Sequence[float] = open_clip.OPENAI_DATASET_STD,
    interpolation: str = "bicubic",
    min_scale: float = 0.08,
) -> T.Compose:
    interp = _INTERP[interpolation]
    if train:
        ops = [T.RandomResizedCrop(image_size, scale=(min_scale, 1.0), interpolation=interp), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(image_size, interpolation=interp), T.CenterCrop(image_size)]
    return T.Compose([T.Lambda(_rgb), *ops, T.ToTensor(), T.Normalize(mean, std)])
