"""Local-prompt heatmaps: per-patch similarity to the predicted class, overlaid on the image (matplotlib, Agg).

For image ``b`` with predicted class ``c`` (GalLoP's combined prediction), the map is
``h[b, p] = mean_m l[b, p, c, m]`` (local cosines averaged over local prompts), shown on the patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gallop.scores import predict_proba  # noqa: E402


@torch.no_grad()
def local_heatmaps(
    net: torch.nn.Module, images: torch.Tensor, text=None, ks: Sequence[int] = (5, 10, 15, 20)
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images [B, 3, H, W]`` -> ``(maps [B, h, w], predicted class [B])``; needs a model with local cosines."""
    g, loc = net(images, text)
    if loc is None:
        raise ValueError("this model has no local features (CoOp); heatmaps need GalLoP or zero-shot CLIP")
    pred = predict_proba(g, loc if getattr(net, "predict_with_local", True) else None, net.logit_scale, ks).argmax(-1)
    sim = loc.mean(-1)  # [B, P, K]
    maps = sim[torch.arange(len(pred)), :, pred]  # [B, P]
    side = math.isqrt(maps.shape[1])
    if side * side != maps.shape[1]:
        raise ValueError(f"{maps.shape[1]} patches do not form a square grid")
    return maps.view(-1, side, side), pred


def unnormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images.cpu() * s + m).clamp(0, 1)


def plot_heatmaps(
    images: torch.Tensor,
    maps: torch.Tensor,
    titles: Sequence[str],
    path: str | Path | None = None,
    alpha: float = 0.5,
    colorbar: bool = False,
):
    """Overlay ``maps [B, h, w]`` (upsampled, bilinear) on ``images [B, 3, H, W]`` in [0, 1]; save a PNG if ``path``.

    ``colorbar``: one colour bar under each overlay, in the map's units (the local cosine similarity).
    """
    b = images.shape[0]
    up = F.interpolate(maps[:, None].float().cpu(), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    fig, axes = plt.subplots(2, b, figsize=(2.2 * b, 5.2 if colorbar else 4.6), squeeze=False)
    for i in range(b):
        img = images[i].permute(1, 2, 0).numpy()
        axes[0, i].imshow(img)
        axes[0, i].set_title(titles[i], fontsize=7)
        axes[1, i].imshow(img)
        overlay = axes[1, i].imshow(up[i].numpy(), cmap="jet", alpha=alpha)
        if colorbar:
            bar = fig.colorbar(overlay, ax=axes[1, i], orientation="horizontal", fraction=0.06, pad=0.04)
            bar.ax.tick_params(labelsize=6)
            bar.set_label("local cosine", fontsize=6)
        for r in range(2):
            axes[r, i].axis("off")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
