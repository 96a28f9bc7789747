"""Log local-prompt heatmaps of a few ID test images to every active wandb logger (``test/heatmaps``).

The maps and the figure come from :mod:`gallop.heatmaps`; this module only decides whether there is anything to log
(a wandb logger, a ViT with local features) and hands the figure to wandb.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch


def log_heatmaps(module: L.LightningModule, images: torch.Tensor, text, topk: Sequence[int]) -> None:
    """Heatmaps of ``images [B, 3, H, W]`` (CLIP-normalised) under ``module.net``; nothing without a wandb logger,
    for a non-ViT tower, or for a net without local cosines (CoOp)."""
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in (module.loggers or []) if isinstance(lg, WandbLogger)]
    net = module.net
    if not loggers or not hasattr(net, "visual") or net.visual.kind != "vit":
        return
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from gallop.heatmaps import local_heatmaps, plot_heatmaps, unnormalize

    try:
        maps, pred = local_heatmaps(net, images, text, topk)
    except ValueError:
        return
    titles = [module.class_names[int(p)] for p in pred]
    fig = plot_heatmaps(unnormalize(images, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), maps, titles)
    import matplotlib.pyplot as plt
    import wandb

    for lg in loggers:
        lg.experiment.log({"test/heatmaps": wandb.Image(fig)})
    plt.close(fig)
