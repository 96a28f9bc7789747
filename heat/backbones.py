"""Frozen classifiers for HEAT features: timm ResNet-34 with the CIFAR stem, ResNet-50, any timm model.

See docs/methods/heat.md#formulas.

- ``cifar_stem=True``: ``conv1`` becomes a 3x3 / stride 1 / padding 1 conv without bias and ``maxpool`` is removed,
  as in HEAT's ``create_backbone.py`` (a 32x32 input then gives a 512x4x4 layer4 map for ResNet-34).
- ``checkpoint``: a local file; HEAT's CIFAR checkpoints keep the weights under ``model_state``; torchvision or timm
  state dicts (optionally under ``state_dict``) load too. torchvision's ResNet-50 ``IMAGENET1K_V1`` keys match timm's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.backbones.timm_backbone import WeightsNotFoundError, create_timm_model


def load_classifier_state(model: nn.Module, checkpoint: str | Path, strict: bool = True) -> nn.Module:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"classifier checkpoint '{path}' does not exist. HEAT's CIFAR ResNet-34 weights come from the authors' "
            f"Dropbox zip (see heat/README.md, `make weights-heat`); ImageNet uses torchvision's resnet50 IMAGENET1K_V1."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    model.load_state_dict(state, strict=strict)
    return model


def create_classifier(
    name: str = "resnet34",
    num_classes: int = 10,
    cifar_stem: bool = False,
    checkpoint: str | None = None,
    weights: str | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """A timm classifier in eval mode, with frozen parameters."""
    model = create_timm_model(name, weights=weights, in_chans=in_chans, num_classes=num_classes)
    if cifar_stem:
        if not hasattr(model, "conv1") or not hasattr(model, "maxpool"):
            raise ValueError(f"cifar_stem needs a ResNet-like timm model with conv1 and maxpool, got {name}")
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if checkpoint is not None:
        load_classifier_state(model, checkpoint)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
