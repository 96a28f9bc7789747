"""Extract and cache every feature set an experiment needs: ``python -m heat.extract experiment=heat/cifar10_gmm``.

It composes the same Hydra config as ``common.launch``. For each feature spec of ``data`` (``train``, ``val_id``,
``val_ood``: {backbone, checkpoint, dataset, split, transform}, where ``transform`` is the ``extract.transform`` config)
it instantiates the spec's transform and the image dataset ``extract.datasets[<dataset>][<split>]`` with it, runs the
frozen ``extract.backbone`` once and writes the cache (:func:`heat.cache.extract_features`, keyed by that transform's
parameters, the weights file's content and the layer). Sets already cached are skipped, so re-running is free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision import transforms as T

import common.config.resolvers  # noqa: F401  (registers the resolvers the configs use)
from heat.cache import extract_features

log = logging.getLogger(__name__)


def image_transform(size: int, crop: int | None, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Resize (to ``size x size`` when ``crop`` is None, else shorter side = ``size`` then CenterCrop ``crop``),
    ToTensor, Normalize. RGB is enforced by the readers."""
    ops = [T.Resize((size, size))] if crop is None else [T.Resize(size), T.CenterCrop(crop)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


def extract_all(cfg: DictConfig, device: str | None = None) -> list[str]:
    """Extract every feature set named in ``cfg.data``; returns their ``dataset/split`` names."""
    ex = cfg.extract
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = hydra.utils.instantiate(ex.backbone).to(device)
    specs = [cfg.data.train, *([cfg.data.val_id] if cfg.data.get("val_id") else []), *cfg.data.get("val_ood", [])]
    done = []
    for spec in specs:
        if spec.dataset not in ex.datasets or spec.split not in ex.datasets[spec.dataset]:
            raise KeyError(f"extract.datasets has no entry {spec.dataset}.{spec.split}; add its reader config")
        transform = hydra.utils.instantiate(spec.transform)
        dataset = hydra.utils.instantiate(ex.datasets[spec.dataset][spec.split], transform=transform)
        loader = DataLoader(
            dataset, batch_size=ex.batch_size, shuffle=False, num_workers=cfg.data.get("num_workers", 0)
        )
        log.info("features of %s/%s (%d images)", spec.dataset, spec.split, len(dataset))
        extract_features(
            model,
            loader,
            cache_dir=cfg.data.cache_dir,
            backbone=spec.backbone,
            checkpoint=spec.checkpoint,
            dataset=spec.dataset,
            split=spec.split,
            transform=transform,
            num_samples=len(dataset),
            device=device,
        )
        done.append(f"{spec.dataset}/{spec.split}")
    return done


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    for name in extract_all(cfg):
        print("cached", name)


if __name__ == "__main__":
    main()
