"""Adapter from pytorch-metric-learning losses to the house loss signature.

House signature (architecture.md): ``loss(embeddings [B, D], labels [B] or [B, L], ref_embeddings=None,
ref_labels=None) -> scalar``. PML's is ``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``.
With hierarchical labels, the finest level (column 0) is used.
"""

from __future__ import annotations

import torch
from torch import nn


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
        indices = None
        if self.miner is not None:
            indices = self.miner(embeddings, labels, ref_embeddings, ref_labels)
        return self.loss(embeddings, labels, indices, ref_embeddings, ref_labels)
