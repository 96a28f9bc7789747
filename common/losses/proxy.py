"""Proxy losses: learnable class proxies, and the normalised-softmax (NSM) loss that ROADMAP and HAPPIER share.

:class:`ProxyLoss` is the part every proxy loss has in common (the NSM below, HAPPIER's CSL): a ``[C, D]``
``nn.Parameter`` named ``proxies`` (saved in checkpoints; ``RetrievalModule`` gives it its own parameter group, with
the lr and weight decay of ``model.loss_param_groups.<loss name>``), drawn from a private generator when ``seed`` is
an int (the global RNG is untouched) or from the global RNG when ``seed`` is None; the label-range check; and the
two zeros: a proxy loss has **no memory term** (with ``ref_*`` it returns a 0 connected to the graph), and an empty
batch gives a 0 that keeps the proxies in the graph.

:class:`NormalizedSoftmaxLoss` (Zhai & Wu, BMVC 2019; HAPPIER's clustering loss L_DG*, Ramzi et al. 2022):

    logits[b, c] = <e_b / |e_b|, w_c / |w_c|> / T,     L = mean_b CE(logits[b], y_b)

with ``y = labels[:, hierarchy_level]`` (the finest level by default), T = 0.05 and ``W`` initialised
U(-1/sqrt(D), 1/sqrt(D)). A zero embedding gets logits 0 and no gradient (:mod:`common.losses.numerics`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.losses.base import LossInputs, RetrievalLoss
from common.losses.numerics import l2_normalize

__all__ = ["NormalizedSoftmaxLoss", "ProxyLoss", "proxy_generator"]


def proxy_generator(seed: int | None) -> torch.Generator | None:
    """A private CPU generator seeded with ``seed`` (None: use the global RNG)."""
    return torch.Generator().manual_seed(seed) if seed is not None else None


class ProxyLoss(RetrievalLoss):
    """Base of the proxy losses: subclasses set ``self.proxies [C, D]`` and implement :meth:`proxy_loss`."""

    proxies: nn.Parameter

    def check_classes(self, y: Tensor, what: str = "labels") -> None:
        """``y`` must lie in ``0..C-1`` (one proxy per class)."""
        num = self.proxies.shape[0]
        if int(y.min()) < 0 or int(y.max()) >= num:
            raise ValueError(
                f"{what} must lie in 0..{num - 1} for {num} proxies, got range [{int(y.min())}, {int(y.max())}]; set "
                f"num_classes (num_proxies for CSL) to the train class count and relabel each level to 0..n-1"
            )

    def cosines(self, inputs: LossInputs) -> Tensor:
        """``[B, C]`` cosine similarities of the batch to the proxies."""
        if inputs.embeddings.shape[1] != self.proxies.shape[1]:
            raise ValueError(
                f"embeddings have dim {inputs.embeddings.shape[1]} but the proxies have dim {self.proxies.shape[1]}; "
                f"set embedding_size to the model's embedding size"
            )
        return inputs.queries @ l2_normalize(self.proxies.to(inputs.queries.dtype), dim=1).T

    def check_labels(self, inputs: LossInputs) -> None:
        """Checks of the label columns that must hold even on an empty batch (none by default)."""

    def proxy_loss(self, inputs: LossInputs) -> Tensor:
        """The loss on a non-empty batch."""
        raise NotImplementedError

    def compute(self, inputs: LossInputs) -> Tensor:
        self.check_labels(inputs)
        if not inputs.in_batch:  # a proxy loss has no reference (memory) term
            return inputs.zero()
        if inputs.labels.shape[0] == 0:  # an empty batch: a zero that keeps the proxies in the graph
            return inputs.zero() + self.proxies.sum() * 0.0
        return self.proxy_loss(inputs)


class NormalizedSoftmaxLoss(ProxyLoss):
    """Cross-entropy over cosine similarities to ``num_classes`` learnable proxies at temperature ``temperature``.

    Args:
        num_classes: C, the number of training classes at ``hierarchy_level`` (labels must be in ``0..C-1``).
        embedding_size: D.
        temperature: T (0.05 in SupRank and HAPPIER).
        hierarchy_level: which label column the proxies stand for (0 = the finest level).
        seed: seed of the proxy initialisation (private generator); None draws from the global RNG.
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
        self.num_classes, self.temperature, self.hierarchy_level = num_classes, temperature, hierarchy_level
        bound = 1.0 / math.sqrt(embedding_size)
        w = torch.rand(num_classes, embedding_size, generator=proxy_generator(seed)) * (2 * bound) - bound
        self.proxies = nn.Parameter(w)  # [C, D]

    def check_labels(self, inputs: LossInputs) -> None:
        if self.hierarchy_level >= inputs.labels.shape[1]:
            raise ValueError(
                f"hierarchy_level={self.hierarchy_level} but labels have only {inputs.labels.shape[1]} level(s)"
            )

    def proxy_loss(self, inputs: LossInputs) -> Tensor:
        y = inputs.labels[:, self.hierarchy_level]
        self.check_classes(y, f"labels at level {self.hierarchy_level}")
        return F.cross_entropy(self.cosines(inputs) / self.temperature, y)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, temperature={self.temperature}, level={self.hierarchy_level}"
