"""ODIN (Liang et al., ICLR 2018, Eq. 1-2): temperature scaling plus input perturbation. Needs the backbone.

Unlike every other scorer, ODIN cannot run on cached features: the perturbation is a gradient step on the **input
image**. It therefore takes the classifier (any ``nn.Module`` mapping images to logits) and scores a dataloader::

    odin = ODIN(model, temperature=1000.0, eps=0.0014)      # HEAT's CIFAR-10 setting
    scores = odin.score_loader(test_loader)                  # Tensor[N], higher = more OOD

Perturbation: ``x~ = x - eps * sign(grad_x CE(f(x)/T, argmax f(x)))``, i.e. a step that raises the top softmax score
(Eq. 2). Score: ``-max_c softmax(f(x~)/T)_c``. ``input_std`` optionally divides the gradient sign by the per-channel
normalisation std, as the original code does for normalised inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heat.features import Features
from heat.scorers.base import Scorer


class ODIN(Scorer):
    """ODIN scorer over images. ``score(Features)`` is unsupported: use :meth:`score_images` / :meth:`score_loader`."""

    def __init__(
        self,
        model: nn.Module,
        temperature: float = 1000.0,
        eps: float = 0.0014,
        input_std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature, self.eps, self.device = temperature, eps, device
        self.input_std = None if input_std is None else torch.tensor(input_std).view(1, -1, 1, 1)

    def score(self, x: Features) -> Tensor:
        raise TypeError(
            "ODIN perturbs the input images, so it cannot score cached Features; "
            "use ODIN(model).score_loader(dataloader) or .score_images(images)"
        )

    def score_images(self, images: Tensor) -> Tensor:
        """ODIN scores ``[B]`` for a batch of (normalised) images ``[B, C, H, W]``."""
        self.model.eval()
        x = images.to(self.device).clone().requires_grad_(True)
        logits = self.model(x) / self.temperature
        loss = F.cross_entropy(logits, logits.argmax(-1).detach())
        (grad,) = torch.autograd.grad(loss, x)
        step = grad.sign()
        if self.input_std is not None:
            step = step / self.input_std.to(step)
        with torch.no_grad():
            logits_p = self.model(x.detach() - self.eps * step) / self.temperature
            return -torch.softmax(logits_p, dim=-1).amax(-1).cpu()

    def score_loader(self, loader: Iterable) -> Tensor:
        """Scores of every batch of ``loader`` (dicts with "image" or ``(image, label)`` tuples), concatenated."""
        out = []
        for batch in loader:
            images = (
                batch["image"] if isinstance(batch, dict) else (batch[0] if isinstance(batch, list | tuple) else batch)
            )
            out.append(self.score_images(images))
        return torch.cat(out)
