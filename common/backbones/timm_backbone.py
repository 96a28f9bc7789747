"""timm backbones by name, with pretrained weights from a timm tag or a local file.

``weights`` selects where the weights come from:

- ``None``: random initialisation (tests, Fashion-MNIST demo);
- ``"hub"``: timm's pretrained tag (needs internet or a filled HF cache); on compute nodes use a file instead;
- a file path written by ``make weights-timm NAME=<model>.<tag>`` (on a login node, :mod:`common.backbones.weights`):
  any ``.safetensors``, ``.pth`` or ``.bin`` file is loaded through ``pretrained_cfg_overlay=dict(file=...)``.
  A missing file raises :class:`WeightsNotFoundError` naming the file and the make target.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for and the expected file is missing."""


def create_timm_model(
    name: str,
    weights: str | None = None,
    in_chans: int = 3,
    num_classes: int = 0,
    **kwargs,
) -> nn.Module:
    """``timm.create_model`` with the project's weight sources (see the module docstring)."""
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if weights == "hub":
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"pretrained weights for timm model '{name}' were asked for, but '{path}' does not exist. "
            f"Fetch them on a machine with internet with `make weights-timm NAME={name}` (writes "
            f"${{paths.weights_dir}}/timm/<model>.<tag>.safetensors, timm's default tag when NAME has none), "
            f"or set `weights: null` for random init."
        )
    return timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )


class TimmBackbone(nn.Module):
    """A timm model truncated before its classifier; ``forward`` returns ``forward_features``.

    Output: ``[B, C, H, W]`` for CNNs, ``[B, T, C]`` tokens for ViTs. :attr:`num_features` is ``C``.
    """

    def __init__(self, name: str, weights: str | None = None, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.name = name
        self.model = create_timm_model(name, weights=weights, in_chans=in_chans, num_classes=0, **kwargs)
        self.num_features: int = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """ViT tokens ``[B, T, C]`` -> ``[B, C]`` with the model's own head pooling (CLS or average)."""
        return self.model.forward_head(tokens, pre_logits=True)
