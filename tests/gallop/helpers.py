"""Tiny in-memory datasets for the GalLoP tests."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorImages(Dataset):
    """Random images whose mean colour depends on the class (so a few steps of training can fit them)."""

    def __init__(self, n_per_class: int, n_classes: int, size: int = 32, seed: int = 0, offset: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n_classes).repeat_interleave(n_per_class)
        base = torch.randn(n_classes, 3, 1, 1, generator=g) + offset
        self.images = base[self.labels] + 0.3 * torch.randn(len(self.labels), 3, size, size, generator=g)
        self.class_names = [f"class_{c}" for c in range(n_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}
