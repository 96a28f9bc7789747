"""The retrieval head and the network that turns images into L2-normalised embeddings."""

from __future__ import annotations

import torch
from torch import nn

from common.backbones.timm_backbone import TimmBackbone
from common.losses.numerics import l2_normalize


class RetrievalHead(nn.Module):
    """Pooling (avg or max) -> optional LayerNorm -> Linear to ``embed_dim`` -> L2 normalisation.

    ``embed_dim=None`` keeps the pooled features (no Linear). Input is a feature map ``[B, C, H, W]`` or already
    pooled features ``[B, C]``.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int | None = 512,
        pooling: str = "avg",
        layer_norm: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.pooling = pooling
        self.norm = nn.LayerNorm(in_dim) if layer_norm else nn.Identity()
        self.fc = nn.Linear(in_dim, embed_dim) if embed_dim is not None else nn.Identity()
        self.normalize = normalize
        self.out_dim = embed_dim if embed_dim is not None else in_dim

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # [B, C, H, W] -> [B, C]
            return x.amax(dim=(2, 3)) if self.pooling == "max" else x.mean(dim=(2, 3))
        if x.ndim == 2:
            return x
        raise ValueError(f"RetrievalHead expects [B, C, H, W] or [B, C] features, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.norm(self.pool(x)))
        return l2_normalize(z) if self.normalize else z  # a zero row stays 0 with a zero gradient


class RetrievalNet(nn.Module):
    """Backbone + :class:`RetrievalHead`. ``forward(images [B, C, H, W]) -> embeddings [B, D]``.

    Args:
        backbone: a :class:`TimmBackbone` (or any module with ``num_features`` returning feature maps).
        embed_dim, pooling, layer_norm, normalize: passed to the head.
        freeze_bn: keep every BatchNorm in eval mode during training (frozen running statistics and affine
            parameters), as ROADMAP/HAPPIER do for small batches of fine-grained data.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int | None = 512,
        pooling: str = "avg",
        layer_norm: bool = False,
        normalize: bool = True,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = RetrievalHead(backbone.num_features, embed_dim, pooling, layer_norm, normalize)
        self.freeze_bn = freeze_bn
        if freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        return self.head.out_dim

    def train(self, mode: bool = True) -> RetrievalNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(images)
        if feats.ndim == 3 and isinstance(self.backbone, TimmBackbone):  # ViT tokens [B, T, C]
            feats = self.backbone.pool_tokens(feats)
        return self.head(feats)
