"""A synthetic image dataset for tests: class-dependent blobs, fast, deterministic, no files."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class SyntheticImages(Dataset):
    """``num_classes`` classes of ``per_class`` images ``[channels, size, size]``; dict items like every reader.

    Each class has a fixed random template; an item is its template plus Gaussian noise, so a network can learn the
    classes. ``augment_noise`` adds fresh noise at every access (a stand-in for random augmentations).
    ``levels=2`` adds a coarse label ``class // group_size`` as column 1.
    """

    def __init__(
        self,
        num_classes: int = 8,
        per_class: int = 8,
        size: int = 32,
        channels: int = 3,
        levels: int = 1,
        group_size: int = 2,
        noise: float = 0.5,
        seed: int = 0,
        augment_noise: float = 0.0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        templates = torch.randn(num_classes, channels, size, size, generator=g)
        fine = torch.arange(num_classes).repeat_interleave(per_class)
        self.images = templates[fine] + noise * torch.randn(len(fine), channels, size, size, generator=g)
        self.augment_noise = augment_noise
        self.labels = torch.stack([fine, fine // group_size], dim=1) if levels == 2 else fine

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]
        if self.augment_noise > 0:  # a random "augmentation" drawn from the global torch RNG
            image = image + self.augment_noise * torch.randn_like(image)
        return {"image": image, "label": self.labels[i], "index": i}
