"""Global and local (patch) visual features of an open_clip image tower, as GalLoP uses them.

Global feature (standard CLIP): ``g = normalize(ln_post(x_L[CLS]) @ proj)``.

Local features, ViT tower (docs/methods/gallop.md#formulas; as in MaskCLIP / GL-MCM): the *value path* of the last
block. With ``x`` the input tokens of the last block (``h = ln_1(x)``):

    v = x + out_proj(W_v h + b_v)           # self-only attention: each token attends to itself
    v = v + MLP(ln_2(v))
    f_p = normalize(local_proj(ln_post(v_p)) @ proj)   for every patch token p (CLS dropped)

``local_proj`` is a bias-free ``Linear(width, width)`` initialised to the identity and trainable, so at init the
local features are exactly the frozen CLIP value path. The value path is computed **only in the last block** (the
original code computes it in every block of both towers and throws all but the last away).

Local features, ModifiedResNet tower: the attention-pool value path on each spatial location,
``f_p = normalize(local_proj(c_proj(v_proj(x_p))))`` with ``local_proj`` acting in ``embed_dim``. As in the original
code, the location's feature ``x_p`` enters the value projection *without* the attention pool's positional embedding
(the pooled global feature adds it, as CLIP does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn


def block_value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The value path of an open_clip ``ResidualAttentionBlock`` on tokens ``x [B, N, W]`` (batch first).

    ``v = x + ls_1(out_proj(W_v ln_1(x) + b_v))``; ``v = v + ls_2(mlp(ln_2(v)))``. Each token is processed alone.
    """
    attn: nn.MultiheadAttention = block.attn
    width = x.shape[-1]
    w_v = attn.in_proj_weight[2 * width :]  # [W, W]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(x), w_v, b_v)
    v = x + block.ls_1(attn.out_proj(v))
    return v + block.ls_2(block.mlp(block.ln_2(v)))


def _vit_last_block(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the ViT up to the last block. Returns (input of the last block, output of the last block), [B, 1+P, W]."""
    x = visual._embeds(images)
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)
    return x, blocks[-1](x)


class LocalFeatureVisual(nn.Module):
    """Wraps an open_clip image tower; returns normalised global ``[B, D]`` and local ``[B, P, D]`` features.

    The wrapped tower is frozen (``requires_grad=False``); only ``local_proj`` is trainable.

    Args:
        visual: ``clip.visual`` (a ``VisionTransformer`` with class-token pooling, or a ``ModifiedResNet``).
        learn_local_proj: create the identity-initialised ``local_proj`` (GalLoP: True).
    """

    def __init__(self, visual: nn.Module, learn_local_proj: bool = True) -> None:
        super().__init__()
        self.visual = visual
        for p in self.visual.parameters():
            p.requires_grad_(False)
        if isinstance(visual, VisionTransformer):
            if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
                raise ValueError("local features need a plain CLIP ViT (class-token pooling, ln_post before proj)")
            self.kind = "vit"
            dim = visual.transformer.width
        elif isinstance(visual, ModifiedResNet):
            self.kind = "resnet"
            dim = visual.attnpool.c_proj.out_features
        else:
            raise TypeError(f"unsupported image tower {type(visual).__name__}: expected a ViT or a ModifiedResNet")
        self.local_proj: nn.Linear | None = None
        if learn_local_proj:
            self.local_proj = nn.Linear(dim, dim, bias=False)
            with torch.no_grad():
                self.local_proj.weight.copy_(torch.eye(dim))

    def train(self, mode: bool = True) -> LocalFeatureVisual:
        super().train(mode)
        self.visual.eval()  # frozen tower: BatchNorm statistics of ResNets stay fixed
        return self

    def _local_proj(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_proj(x) if self.local_proj is not None else x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [B, 3, H, W]`` -> ``(global [B, D], local [B, P, D])``, both L2-normalised."""
        if self.kind == "vit":
            return self._forward_vit(images)
        return self._forward_resnet(images)

    def _forward_vit(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.visual
        x_in, x_out = _vit_last_block(v, images)
        g = v.ln_post(x_out[:, 0]) @ v.proj  # [B, D]
        vp = block_value_path(v.transformer.resblocks[-1], x_in[:, 1:])  # patches only: [B, P, W]
        loc = self._local_proj(v.ln_post(vp)) @ v.proj  # [B, P, D]
        return F.normalize(g, dim=-1), F.normalize(loc, dim=-1)

    def _forward_resnet(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images.to(v.conv1.weight.dtype))))))  # [B, C, h, w]
        g = v.attnpool(x)
        pool = v.attnpool
        tokens = x.flatten(2).transpose(1, 2)  # [B, hw, C], row-major over (h, w); no positional embedding
        loc = self._local_proj(pool.c_proj(pool.v_proj(tokens)))  # [B, hw, D]
        return F.normalize(g, dim=-1), F.normalize(loc, dim=-1)
