"""Adapter from pytorch-metric-learning losses to the house loss contract (:mod:`common.losses.base`).

House signature: ``loss(embeddings [B, D], labels [B] or [B, L], ref_embeddings=None, ref_labels=None) -> scalar``.
PML's is ``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``. With hierarchical labels,
the finest level (column 0) is used.

Inputs, as for every house loss: fp16/bf16 embeddings (and a memory of another precision) are computed in fp32. When
the PML distance L2-normalises the embeddings (``distance.normalize_embeddings``, e.g. ``CosineSimilarity``, PML's
default ``LpDistance``), the adapter hands PML the shared normalised embeddings
(:func:`~common.losses.numerics.l2_normalize`): the same vectors for every embedding of norm >= 1e-6 (PML's own
normalisation then leaves them unchanged), while an all-zero embedding gets no gradient instead of PML's ``1/1e-12``
one.
"""

from __future__ import annotations

import torch
from torch import nn

from common.losses.base import LossInputs, RetrievalLoss


class PMLLoss(RetrievalLoss):
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

    def compute(self, inputs: LossInputs) -> torch.Tensor:
        if self.normalizes:
            embeddings, ref = inputs.queries, inputs.refs
        else:
            embeddings, ref = inputs.embeddings, inputs.ref_embeddings
        labels = inputs.q_labels
        ref_args = () if inputs.in_batch else (ref, inputs.r_labels)
        indices = self.miner(embeddings, labels, *ref_args) if self.miner is not None else None
        return self.loss(embeddings, labels, indices, *ref_args)
