"""Normalised-softmax (NSM) proxy loss (Zhai & Wu 2019; HAPPIER's ClusterLoss, specs §1.2).

    logits = normalize(E) @ normalize(W)^T / T,    loss = CE(logits, y)      T = 0.05, W in R^{C x D}

W is initialised U(-1/sqrt(D), 1/sqrt(D)). The proxies get their own learning rate through the module's
``loss_param_groups`` (configs/model/loss/nsm.yaml: Adam-style lr 10 as in SupRank). A proxy loss has no
reference term: with ``ref_embeddings`` given (a memory) it returns a zero that stays in the graph, and so does an
empty batch. A zero embedding is handled as in every roadmap loss (``roadmap._inputs``): logits 0, no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.losses.numerics import l2_normalize
from roadmap._inputs import fp32_forward, prepare, zero_loss


class NormalizedSoftmaxLoss(nn.Module):
    """Cross-entropy over cosine similarities to ``num_classes`` learnable proxies at temperature ``temperature``."""

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        if num_classes < 1 or embedding_dim < 1 or temperature <= 0:
            raise ValueError("num_classes and embedding_dim must be >= 1 and temperature > 0")
        self.num_classes, self.temperature = num_classes, temperature
        bound = 1.0 / math.sqrt(embedding_dim)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_dim).uniform_(-bound, bound))

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        inp = prepare(embeddings, labels)
        if ref_embeddings is not None:
            return zero_loss(inp)
        if inp.queries.shape[1] != self.proxies.shape[1]:
            raise ValueError(
                f"embeddings have dim {inp.queries.shape[1]} but the proxies have dim {self.proxies.shape[1]}; "
                f"set embedding_dim to the model's embedding size"
            )
        if inp.q_labels.numel() == 0:  # an empty batch: a zero that keeps the proxies in the graph
            return inp.queries.sum() * 0.0 + self.proxies.sum() * 0.0
        if int(inp.q_labels.min()) < 0 or int(inp.q_labels.max()) >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}) for {self.num_classes} proxies, got range "
                f"[{int(inp.q_labels.min())}, {int(inp.q_labels.max())}]; set num_classes to the train class count"
            )
        logits = inp.queries @ l2_normalize(self.proxies.to(inp.queries.dtype), dim=1).T / self.temperature
        return F.cross_entropy(logits, inp.q_labels)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, temperature={self.temperature}"
