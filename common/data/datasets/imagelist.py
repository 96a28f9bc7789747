"""OpenOOD-style image lists for near/far OOD splits (OpenOOD v1.5 ``benchmark_imglist``).

Layout::

    <root>/benchmark_imglist/<benchmark>/test_<dataset>.txt   lines "<relative/path.jpg> <label>"
    <root>/images_classic/...  <root>/images_largescale/...     (the image roots the relative paths start from)

``OPENOOD_SPLITS`` names the near/far sets of each benchmark (spec §9.1). OOD items carry their list label (OpenOOD
writes -1 or 0 for OOD sets; use ``is_ood`` to decide, not the label).
"""

from __future__ import annotations

from pathlib import Path

from common.data.datasets.base import ImageListDataset
from common.data.errors import require_path

OPENOOD_SPLITS = {
    "cifar10": {"id": ["cifar10"], "near": ["cifar100", "tin"], "far": ["mnist", "svhn", "texture", "places365"]},
    "cifar100": {"id": ["cifar100"], "near": ["cifar10", "tin"], "far": ["mnist", "svhn", "texture", "places365"]},
    "imagenet200": {
        "id": ["imagenet200"],
        "near": ["ssb_hard", "ninco"],
        "far": ["inaturalist", "textures", "openimage_o"],
    },
    "imagenet": {"id": ["imagenet"], "near": ["ssb_hard", "ninco"], "far": ["inaturalist", "textures", "openimage_o"]},
}


def read_imglist(path: str | Path) -> tuple[list[str], list[int]]:
    """``(relative paths, int labels)`` of an OpenOOD list file; a line without label gets -1."""
    rel, labels = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"{path}:{n}: expected '<path> [label]', got {line!r}")
        try:
            labels.append(int(parts[1]) if len(parts) == 2 else -1)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: label {parts[1]!r} is not an integer") from e
        rel.append(parts[0])
    return rel, labels


class ImageListOOD(ImageListDataset):
    """One list file of an OpenOOD benchmark. ``split`` = "test" (or "val"); ``is_ood`` set from the split table."""

    def __init__(
        self,
        root,
        benchmark: str,
        dataset: str,
        split: str = "test",
        image_root: str | None = None,
        transform=None,
        on_error: str = "raise",
    ):
        if benchmark not in OPENOOD_SPLITS:
            raise ValueError(f"benchmark must be one of {sorted(OPENOOD_SPLITS)}, got {benchmark!r}")
        layout = "  <root>/benchmark_imglist/<benchmark>/test_<dataset>.txt + the image folders they point into"
        lst = require_path(
            Path(root) / "benchmark_imglist" / benchmark / f"{split}_{dataset}.txt",
            dataset=f"OpenOOD list {benchmark}/{split}_{dataset}",
            layout=layout,
            make_target="data-openood",
        )
        rel, labels = read_imglist(lst)
        base = (
            Path(root) / image_root
            if image_root
            else Path(root) / ("images_largescale" if benchmark.startswith("imagenet") else "images_classic")
        )
        splits = OPENOOD_SPLITS[benchmark]
        self.group = next((g for g, names in splits.items() if dataset in names), None)
        if self.group is None:
            raise ValueError(f"{dataset!r} is not part of the {benchmark} benchmark: {splits}")
        self.is_ood = self.group != "id"
        super().__init__([base / r for r in rel], labels, transform=transform, on_error=on_error)
