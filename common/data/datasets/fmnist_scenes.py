"""Cluttered Fashion-MNIST scenes: one labelled item among smaller distractors and noise on a larger canvas.

A scene is a ``canvas x canvas`` grayscale image (64 px by default) built from the Fashion-MNIST IDX files
(read by :func:`common.data.datasets.fashion_mnist.load_fashion_mnist`):

- **the labelled item**: one image of the scene's class, resized to a side drawn uniformly in ``main_size``
  (30-40 px) and placed entirely inside the canvas at a uniform position;
- **distractors**: ``n_distractors`` (2-4) items of *other* classes drawn from ``distractor_classes`` (default the
  8 in-distribution classes, never the scene's own class), each resized to a side in ``distractor_size`` (12-22 px,
  so at most ~0.73 of the smallest labelled item) and placed at a uniform position where up to ``max_outside``
  (40 %) of its side may fall off the canvas (partial items). A placement is redrawn (up to 20 times) while it covers
  more than ``max_overlap`` (20 %) of the labelled item's box, so the labelled item stays visible;
- every item is flipped left-right with probability 1/2 and scaled in intensity by a factor in ``intensity``;
  overlapping items are merged with a pixel-wise max (Fashion-MNIST backgrounds are black);
- **noise**: additive Gaussian pixel noise with a standard deviation drawn in ``noise_std`` (fraction of full scale),
  then clipped to [0, 255].

**Which item is labelled**: the largest one. Its side is at least ``main_size[0]`` and every distractor's side is at
most ``distractor_size[1] < main_size[0]``, so the label is well defined from the image alone (the largest complete
garment), and it is never cut by the canvas border.

Determinism: scene ``i`` is drawn from ``numpy.random.default_rng([seed, split_code, i])`` (its own stream), and the
labelled items of class ``c`` are a fixed permutation (``default_rng([seed, split_code, 1000 + c])``) of that class's
images in the split, so a scene depends only on ``(root files, split, seed, classes, per_class, config, i)``, not on
the order in which scenes are read. Resizing is ``torch.nn.functional.interpolate`` (bilinear, antialiased) on CPU.

Held-out classes (near-OOD): build the ID datasets with ``classes`` and ``distractor_classes`` both inside the ID
set; build the OOD set with ``classes=(8, 9)`` (Bag, Ankle boot) and the same ID ``distractor_classes``, so ID and
OOD scenes have the same clutter and differ only in the labelled item.

Items are dicts ``{"image", "label", "index"}``; ``label`` is the Fashion-MNIST class id of the labelled item
(int64). Without ``transform`` the image is a float tensor ``[1, canvas, canvas]`` in [0, 1]; with it, the
transform gets a grayscale PIL image. :meth:`FashionMNISTScenes.layout` returns what was drawn (classes, boxes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from common.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

ID_CLASSES: tuple[int, ...] = tuple(range(8))  # T-shirt/top ... Sneaker
HELD_OUT_CLASSES: tuple[int, ...] = (8, 9)  # Bag, Ankle boot
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn (sizes in pixels of the canvas; ranges are inclusive)."""

    canvas: int = 64
    main_size: tuple[int, int] = (30, 40)
    distractor_size: tuple[int, int] = (12, 22)
    n_distractors: tuple[int, int] = (2, 4)
    max_outside: float = 0.4
    max_overlap: float = 0.2
    intensity: tuple[float, float] = (0.7, 1.0)
    noise_std: tuple[float, float] = (0.0, 0.15)

    def __post_init__(self) -> None:
        if self.distractor_size[1] >= self.main_size[0]:
            raise ValueError(
                f"distractor_size {self.distractor_size} must stay below main_size {self.main_size}: the labelled "
                f"item is defined as the largest one"
            )
        if self.main_size[1] > self.canvas:
            raise ValueError(f"main_size {self.main_size} does not fit in a {self.canvas} px canvas")


@dataclass(frozen=True)
class PlacedItem:
    """One item of a scene: class id, index of the image in the split, top-left corner, side, flip, intensity."""

    cls: int
    item: int
    x: int
    y: int
    size: int
    flip: bool
    intensity: float


@dataclass(frozen=True)
class SceneLayout:
    """What scene ``i`` holds: its label, the labelled item first, then the distractors, and the noise level."""

    label: int
    items: tuple[PlacedItem, ...]
    noise_std: float


def paste_item(
    canvas: torch.Tensor, item: torch.Tensor, x: int, y: int, size: int, flip: bool = False, intensity: float = 1.0
) -> torch.Tensor:
    """Resize ``item [h, w]`` (float, [0, 1]) to ``size x size`` and merge it into ``canvas [H, W]`` with a max.

    ``(x, y)`` is the top-left corner in canvas pixels; parts outside the canvas are dropped (partial items).
    Resizing: bilinear, antialiased. Returns ``canvas`` (modified in place).
    """
    patch = F.interpolate(item[None, None].float(), size=(size, size), mode="bilinear", antialias=True)[0, 0]
    if flip:
        patch = patch.flip(-1)
    return place(canvas, (patch * intensity).clamp_(0.0, 1.0), x, y)


def place(canvas: torch.Tensor, patch: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """Merge ``patch [s, s]`` into ``canvas [H, W]`` with a pixel-wise max, top-left corner at ``(x, y)``; the parts
    outside the canvas are dropped. Returns ``canvas`` (modified in place)."""
    h, w = canvas.shape
    ph, pw = patch.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if x1 <= x0 or y1 <= y0:
        return canvas
    region = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    canvas[y0:y1, x0:x1] = torch.maximum(canvas[y0:y1, x0:x1], region)
    return canvas


def _overlap(a: PlacedItem, bx: int, by: int, bs: int) -> float:
    """Fraction of ``a``'s box covered by the box ``(bx, by, bs)``."""
    w = max(0, min(a.x + a.size, bx + bs) - max(a.x, bx))
    h = max(0, min(a.y + a.size, by + bs) - max(a.y, by))
    return w * h / float(a.size * a.size)


class FashionMNISTScenes(Dataset):
    """Deterministic cluttered scenes (see the module docstring for the generative rule and the label).

    Args:
        root: folder holding the Fashion-MNIST IDX files.
        split: ``"train"`` (few-shot pool) and ``"val"`` (tuning) draw items from the Fashion-MNIST train split, with
            different scene streams; ``"test"`` draws them from the test split.
        classes: classes of the labelled items (``per_class`` scenes each, in blocks: scene ``i`` has class
            ``classes[i // per_class]``).
        per_class: scenes per class.
        seed: scene seed (a different seed gives different scenes).
        distractor_classes: where distractors come from (the scene's own class is always excluded).
        transform: applied to the grayscale PIL scene; default: float tensor ``[1, canvas, canvas]`` in [0, 1].
        config: a :class:`SceneConfig`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        classes: Sequence[int] = ID_CLASSES,
        per_class: int = 100,
        seed: int = 0,
        distractor_classes: Sequence[int] = ID_CLASSES,
        transform: Callable | None = None,
        config: SceneConfig | None = None,
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        self.config = config or SceneConfig()
        self.classes = [int(c) for c in classes]
        self.distractor_classes = [int(c) for c in distractor_classes]
        for c in (*self.classes, *self.distractor_classes):
            if not 0 <= c < len(FASHION_MNIST_CLASSES):
                raise ValueError(f"Fashion-MNIST class ids are 0..9, got {c}")
        if any(len([d for d in self.distractor_classes if d != c]) == 0 for c in self.classes):
            raise ValueError("every scene class needs at least one distractor class other than itself")
        images, labels = load_fashion_mnist(root, "test" if split == "test" else "train")
        self.images = torch.from_numpy(images)  # uint8 [N, 28, 28]
        self._by_class = {c: np.flatnonzero(labels == c) for c in set(self.classes) | set(self.distractor_classes)}
        for c, idx in self._by_class.items():
            if len(idx) == 0:
                raise ValueError(f"Fashion-MNIST {split} has no image of class {c} ({FASHION_MNIST_CLASSES[c]})")
        self.split, self.seed, self.per_class = split, int(seed), int(per_class)
        self._code = _SPLIT_CODE[split]
        self._main = {  # labelled items of class c: a fixed permutation of that class's images
            c: np.random.default_rng([self.seed, self._code, 1000 + c]).permutation(self._by_class[c])
            for c in self.classes
        }
        self.labels = torch.tensor(np.repeat(self.classes, self.per_class), dtype=torch.long)
        self.class_names = list(FASHION_MNIST_CLASSES)
        self.transform = transform
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def layout(self, i: int) -> SceneLayout:
        """The items and noise level of scene ``i`` (labelled item first)."""
        if not 0 <= i < len(self):
            raise IndexError(f"scene {i} out of range (0..{len(self) - 1})")
        cfg = self.config
        rng = np.random.default_rng([self.seed, self._code, int(i)])
        label = int(self.labels[i])
        pool = self._main[label]
        item_index = int(pool[(i % self.per_class) % len(pool)])

        def style() -> tuple[bool, float]:
            return bool(rng.random() < 0.5), float(rng.uniform(*cfg.intensity))

        size = int(rng.integers(cfg.main_size[0], cfg.main_size[1] + 1))
        x, y = (int(v) for v in rng.integers(0, cfg.canvas - size + 1, size=2))
        main = PlacedItem(label, item_index, x, y, size, *style())
        others = [c for c in self.distractor_classes if c != label]
        n = int(rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
        items = [main]
        for _ in range(n):
            c = int(rng.choice(others))
            idx = int(rng.choice(self._by_class[c]))
            s = int(rng.integers(cfg.distractor_size[0], cfg.distractor_size[1] + 1))
            lo, hi = -int(cfg.max_outside * s), cfg.canvas - s + int(cfg.max_outside * s)
            for _try in range(20):
                dx, dy = (int(v) for v in rng.integers(lo, hi + 1, size=2))
                if _overlap(main, dx, dy, s) <= cfg.max_overlap:
                    break
            items.append(PlacedItem(c, idx, dx, dy, s, *style()))
        noise = float(rng.uniform(*cfg.noise_std))
        return SceneLayout(label, tuple(items), noise)

    def render(self, i: int) -> np.ndarray:
        """Scene ``i`` as uint8 ``[canvas, canvas]`` (cached)."""
        if i in self._cache:
            return self._cache[i]
        lay = self.layout(i)
        cfg = self.config
        canvas = torch.zeros(cfg.canvas, cfg.canvas)
        for it in lay.items:
            paste_item(canvas, self.images[it.item].float() / 255.0, it.x, it.y, it.size, it.flip, it.intensity)
        if lay.noise_std > 0:
            g = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, self._code, i, 1]).integers(2**62)))
            canvas += lay.noise_std * torch.randn(canvas.shape, generator=g)
        out = (canvas.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
        self._cache[i] = out
        return out

    def __getitem__(self, i: int) -> dict:
        scene = self.render(int(i))
        if self.transform is not None:
            x = self.transform(Image.fromarray(scene, mode="L"))
        else:
            x = torch.from_numpy(scene).float().div_(255.0).unsqueeze(0)
        return {"image": x, "label": self.labels[i], "index": int(i)}
