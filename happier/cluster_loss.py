"""Clustering loss L_DG* of HAPPIER: a normalised softmax (NSM) over learnable class proxies.

    logits[b, c] = <e_b / |e_b|, w_c / |w_c|> / T
    L_clust      = mean_b CE(logits[b], y_b)            (y = labels[:, hierarchy_level], T = 0.05)

The proxies ``W [C, D]`` are an ``nn.Parameter`` (so they are saved in checkpoints) initialised
U(-1/sqrt(D), 1/sqrt(D)). In the original code they have their own optimizer (Adam lr 10 on SOP); here
``RetrievalModule`` puts them in their own parameter group, whose lr and weight decay come from
``model.loss_param_groups.<loss name>``.

Inputs: fp16/bf16 embeddings are computed in fp32; an empty batch gives a zero that keeps the proxies in the graph;
an embedding of norm below 1e-6 gets logits 0 and no gradient (``common.losses.numerics.l2_normalize``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.losses.numerics import fp32_forward, l2_normalize
from happier._checks import check_embeddings_and_labels


class ClusterLoss(nn.Module):
    """Normalised-softmax cross-entropy on one hierarchy level (default: the finest).

    Args:
        num_classes: number of classes C at ``hierarchy_level`` (labels must be in ``0..C-1``).
        embedding_size: D.
        temperature: T (0.05 in HAPPIER).
        hierarchy_level: which label column the proxies stand for.
        seed: seed of the proxy initialisation (a private generator; the global RNG is untouched). None uses the
            global RNG.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        temperature: float = 0.05,
        hierarchy_level: int = 0,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"num_classes and embedding_size must be positive, got {num_classes}, {embedding_size}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_classes = num_classes
        self.temperature = temperature
        self.hierarchy_level = hierarchy_level
        bound = 1.0 / math.sqrt(embedding_size)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.rand(num_classes, embedding_size, generator=gen) * (2 * bound) - bound
        self.proxies = nn.Parameter(w)  # [C, D]

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` cosine similarities to the proxies divided by T."""
        return l2_normalize(embeddings) @ l2_normalize(self.proxies.to(embeddings.dtype)).T / self.temperature

    @fp32_forward
    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over the batch. ``ref_*`` (a memory) is not used by a proxy loss."""
        labels = check_embeddings_and_labels(embeddings, labels)
        if self.hierarchy_level >= labels.shape[1]:
            raise ValueError(f"hierarchy_level={self.hierarchy_level} but labels have only {labels.shape[1]} level(s).")
        if len(labels) == 0:
            return self.logits(embeddings).sum() * 0.0
        y = labels[:, self.hierarchy_level]
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(
                f"labels at level {self.hierarchy_level} must lie in 0..{self.num_classes - 1}, got range "
                f"[{int(y.min())}, {int(y.max())}]. Set num_classes to the number of training classes and relabel "
                f"each level to 0..n-1."
            )
        return F.cross_entropy(self.logits(embeddings), y)
