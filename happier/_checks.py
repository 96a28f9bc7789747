"""Input validation shared by the HAPPIER losses: clear errors that name the problem and the fix.

Precision and normalisation are those of every loss (``common.losses.numerics``): fp16/bf16 inputs are computed in
fp32 (``fp32_forward``), and an embedding of norm below 1e-6 is normalised to zero with no gradient (``l2_normalize``).
"""

from __future__ import annotations

import torch


def check_embeddings_and_labels(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str = "embeddings",
    min_levels: int = 1,
    allow_multilabel: bool = False,
) -> torch.Tensor:
    """Validate ``embeddings [B, D]`` and hierarchical ``labels [B, L]``; return labels as int64 ``[B, L]``.

    Flat labels ``[B]`` are accepted and viewed as ``[B, 1]`` (a one-level hierarchy). With ``allow_multilabel``
    a boolean ``[B, C]`` multi-label matrix is returned unchanged.
    """
    if not torch.is_tensor(embeddings) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if torch.is_tensor(embeddings) else type(embeddings).__name__
        raise ValueError(f"{name} must be a float tensor [B, D]; got {shape}. Flatten the model output first.")
    if not embeddings.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {embeddings.dtype}; cast with `.float()`.")
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} contains NaN or inf values; check the learning rate and the model output.")
    labels = torch.as_tensor(labels, device=embeddings.device)
    if allow_multilabel and labels.dtype == torch.bool and labels.ndim == 2 and len(labels) == len(embeddings):
        return labels
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids [B, L]; got dtype {labels.dtype}. Cast with `.long()`.")
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape [B, L] (column 0 = finest level) or [B]; got {tuple(labels.shape)}.")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{name} has {embeddings.shape[0]} rows but labels has {labels.shape[0]}: one label row per embedding."
        )
    if labels.shape[1] < min_levels:
        raise ValueError(f"labels must have at least {min_levels} level(s), got shape {tuple(labels.shape)}.")
    return labels.long()
