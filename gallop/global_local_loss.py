"""GalLoP's sparse multiscale local reduction, prompt dropout and the global + local loss.

Formulas: docs/methods/gallop.md#formulas.

Notation: ``B`` images, ``P`` patches, ``K`` classes, ``M`` prompts; ``g [B, K, M]`` global cosines
``<f_img, t^g_{k,m}>``, ``l [B, P, K, M]`` local cosines ``<f_p, t^l_{k,m}>``; ``s`` the frozen CLIP logit scale.

- Top-k reduction (sparsity, multiscale): ``r[b, k, m] = mean of the k_m largest l[b, :, k, m] over patches``, with one
  ``k_m`` per local prompt (``[5, 10, 15, 20]``): class-specific patch selection.
- Prompt dropout (global prompts only): each image keeps ``max(M - floor(p M), 1)`` prompts drawn uniformly
  (with replacement, as the original) and averages their cosines. At ``p = 0`` the original still draws ``M``
  indices with replacement (so an image usually sees some prompts twice and others not at all), and so does this.
- Loss (the paper's equation numbers could not be checked):
  ``L = CE(s * g_kept, y) + mean_m CE(s * r[:, :, m], y)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def topk_reduce(local_logits: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``local_logits [B, P, K, M]`` -> ``[B, K, M]``: for prompt ``m``, the mean of its top-``ks[m]`` patches.

    ``ks`` has one entry per prompt, or one entry shared by all prompts. ``k`` larger than ``P`` uses all patches.
    """
    if local_logits.ndim != 4:
        raise ValueError(f"local_logits must be [B, P, K, M], got shape {tuple(local_logits.shape)}")
    m = local_logits.shape[-1]
    ks = list(ks)
    if len(ks) == 1:
        ks = ks * m
    if len(ks) != m:
        raise ValueError(f"{len(ks)} top-k values for {m} local prompts; give one per prompt (or one for all)")
    p = local_logits.shape[1]
    out = []
    for i, k in enumerate(ks):
        if k < 1:
            raise ValueError(f"top-k must be >= 1, got {k}")
        top = local_logits[..., i].topk(min(k, p), dim=1).values  # [B, k, K]
        out.append(top.mean(dim=1))
    return torch.stack(out, dim=-1)


def keep_number(n_prompts: int, dropout: float) -> int:
    """Prompts kept per image by prompt dropout: ``max(M - floor(p M), 1)``."""
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"prompt dropout must be in [0, 1], got {dropout}")
    return max(n_prompts - math.floor(dropout * n_prompts), 1)


def prompt_dropout(
    global_logits: torch.Tensor, dropout: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``global_logits [B, K, M]`` -> ``[B, K]``: per image, the mean over ``keep_number`` random prompts.

    Indices are drawn with replacement per image (``torch.randint``), as in the original code, also at
    ``dropout == 0`` (``M`` draws with replacement, not the mean of all prompts).
    """
    b, k, m = global_logits.shape
    n_keep = keep_number(m, dropout)
    idx = torch.randint(0, m, (b, n_keep), generator=generator, device="cpu").to(global_logits.device)
    gathered = torch.gather(global_logits, 2, idx[:, None, :].expand(b, k, n_keep))  # [B, K, keep]
    return gathered.mean(dim=-1)


def gallop_loss(
    global_logits: torch.Tensor,
    local_logits: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float | torch.Tensor,
    ks: Sequence[int] = (5, 10, 15, 20),
    dropout: float = 0.75,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """GalLoP training loss. Returns ``{"loss", "loss_global", "loss_local"}``.

    Args:
        global_logits: cosines ``[B, K, M_g]``; local_logits: cosines ``[B, P, K, M_l]``; labels: int64 ``[B]``.
        logit_scale: ``s`` (the exponentiated, frozen CLIP scale, ~100 for OpenAI weights).
    """
    if labels.ndim != 1 or labels.shape[0] != global_logits.shape[0]:
        raise ValueError(f"labels must be [B]={global_logits.shape[0]}, got shape {tuple(labels.shape)}")
    g = prompt_dropout(global_logits, dropout, generator)
    loss_g = F.cross_entropy(logit_scale * g, labels)
    r = topk_reduce(local_logits, ks)  # [B, K, M_l]
    m = r.shape[-1]
    loss_l = torch.stack([F.cross_entropy(logit_scale * r[..., i], labels) for i in range(m)]).mean()
    return {"loss": loss_g + loss_l, "loss_global": loss_g, "loss_local": loss_l}
