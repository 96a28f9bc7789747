"""Adapter from pytorch-metric-learning losses to the house loss signature.

House signature (architecture.md): ``loss(embeddings [B, D], labels [B] or [B, L], ref_embeddings=None,
ref_labels=None) -> scalar``. PML's is ``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``.
With hierarchical labels, the finest level (column 0) is used.

Inputs, as for every house loss (``common.losses.numerics``): fp16/bf16 embeddings (and a memory of another precision)
are computed in fp32. When the PML distance L2-normalises the embeddings (``distance.normalize_embeddings``, e.g.
``CosineSimilarity``, PML's default ``LpDistance``), the adapter normalises them first with
:func:`~common.losses.numerics.l2_normalize`: the same vectors for every embedding of norm >= 1e-6 (PML's own
normalisation then leaves them unchanged), while an all-zero embedding gets no gradient instead of PML's ``1/1e-12``
one.
"""

from __future__ import annotations

import torch
from torch import nn

from common.losses.numerics import fp32_forward, l2_normalize


class PMLLoss(nn.Module):
    """Wrap a PML loss (and optional miner) so that it takes the house signature.

    Example (Hydra)::

        contrastive:
          _target_: common.losses.pml_adapter.PMLLoss
          loss: {_target_: pytorch_metric_learning.losses.ContrastiveLoss, pos_margin: 1.0, neg_margin: 0.5,
                 distance: {_target_: pytorch_metric_learning.distances.CosineSimilarity}}
    """

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    @property
    def normalizes(self) -> bool:
        """Whether the wrapped loss's distance L2-normalises the embeddings (then the adapter does it first)."""
        return bool(getattr(getattr(self.loss, "distance", None), "normalize_embeddings", False))

    @fp32_forward
    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if labels.ndim == 2:
            labels = labels[:, 0]
        if ref_labels is not None and ref_labels.ndim == 2:
            ref_labels = ref_labels[:, 0]
        if self.normalizes:
            embeddings = l2_normalize(embeddings)
            ref_embeddings = None if ref_embeddings is None else l2_normalize(ref_embeddings)
        indices = None
        if self.miner is not None:
            indices = self.miner(embeddings, labels, ref_embeddings, ref_labels)
        return self.loss(embeddings, labels, indices, ref_embeddings, ref_labels)
