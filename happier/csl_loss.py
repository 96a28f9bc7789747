"""CSL baseline ("Cross-Scale Learning", from the DyML benchmark paper), as used in HAPPIER's tables.

One learnable proxy per *fine* class, each tagged with the full hierarchy row of its class. With
``s[b, p] = <e_b/|e_b|, P_p/|P_p|>``, scale gamma (32) and one margin m_l per level l:

    loss_l = mean_b softplus( logsumexp_{p : label_l(p) != label_l(b)} gamma * s[b, p]
                              - gamma * s[b, y_b] + gamma * m_l )
    loss   = sum_l loss_l            (reduction="sum"; "mean" averages over levels)

The positive term is always the item's own fine proxy (y_b = labels[b, 0]), reused at every level. A row with no
negative proxy at level l (every proxy shares its label) contributes 0. Proxies, seeding, the label-range check and
the zeros (no memory term; an empty batch keeps the proxies in the graph) are those of every proxy loss
(:class:`common.losses.proxy.ProxyLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.losses.base import LossInputs
from common.losses.proxy import ProxyLoss, proxy_generator


class CSLLoss(ProxyLoss):
    """Hierarchical proxy loss with per-level margins.

    Args:
        num_proxies: number of fine training classes (labels[:, 0] must lie in ``0..num_proxies-1``).
        embedding_size: D.
        margins: one margin per level, finest first ([0.25, 0.35, 0.45] for DyML, [0.25, 0.45] for SOP).
        scale: gamma (32).
        reduction: "sum" (original) or "mean" over levels.
        hierarchy: optional ``[num_proxies, L]`` label rows of the proxies. Rows not given are learnt from the
            batches: the first time fine class c is seen, its row is stored. Until then an unknown proxy counts as a
            negative at every level. Call :meth:`register_labels` with the training labels to set all rows up front.
        seed: seed of the proxy initialisation (private generator; the global RNG is untouched).
    """

    def __init__(
        self,
        num_proxies: int,
        embedding_size: int,
        margins: Sequence[float] = (0.25, 0.35, 0.45),
        scale: float = 32.0,
        reduction: str = "sum",
        hierarchy: torch.Tensor | Sequence[Sequence[int]] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if len(margins) < 1:
            raise ValueError("margins must hold one value per hierarchy level")
        self.num_proxies = num_proxies
        self.margins = [float(m) for m in margins]
        self.scale = float(scale)
        self.reduction = reduction
        gen = proxy_generator(seed)
        self.proxies = nn.Parameter(torch.randn(num_proxies, embedding_size, generator=gen) / embedding_size**0.5)
        # label rows of the proxies; -1 = not seen yet. Persistent: saved in checkpoints.
        self.register_buffer("proxy_labels", torch.full((num_proxies, len(self.margins)), -1, dtype=torch.long))
        if hierarchy is not None:
            self.register_labels(torch.as_tensor(hierarchy))

    @torch.no_grad()
    def register_labels(self, labels: torch.Tensor) -> None:
        """Store the hierarchy row of each fine class found in ``labels [N, L]`` (e.g. all training labels)."""
        labels = torch.as_tensor(labels).long().to(self.proxy_labels.device)
        if labels.ndim != 2 or labels.shape[1] != len(self.margins):
            raise ValueError(
                f"labels must be [N, {len(self.margins)}] (one column per margin); got {tuple(labels.shape)}."
            )
        fine = labels[:, 0]
        self.check_classes(fine, "fine labels")
        self.proxy_labels[fine] = labels

    def check_labels(self, inputs: LossInputs) -> None:
        if inputs.labels.shape[1] != len(self.margins):
            raise ValueError(
                f"labels have {inputs.labels.shape[1]} level(s) but {len(self.margins)} margins were given; pass one "
                f"margin per level."
            )

    def proxy_loss(self, inputs: LossInputs) -> torch.Tensor:
        labels = inputs.labels
        fine = labels[:, 0]
        self.check_classes(fine, "fine labels")
        with torch.no_grad():
            unknown = self.proxy_labels[fine, 0] < 0
            if unknown.any():
                self.proxy_labels[fine[unknown]] = labels[unknown]

        logits = self.scale * self.cosines(inputs)  # [B, P]
        pos = logits.gather(1, fine[:, None]).squeeze(1)  # [B]
        per_level = []
        for level, margin in enumerate(self.margins):
            neg = self.proxy_labels[None, :, level] != labels[:, level, None]  # [B, P]
            has_neg = neg.any(dim=1)
            masked = logits.masked_fill(~neg, float("-inf"))
            # rows without a negative get a finite dummy row (no NaN gradient through logsumexp), then are zeroed
            masked = torch.where(has_neg[:, None], masked, torch.zeros_like(masked))
            lse = torch.logsumexp(masked, dim=1)
            term = F.softplus(lse - pos + self.scale * margin)
            per_level.append(torch.where(has_neg, term, torch.zeros_like(term)).mean())
        total = torch.stack(per_level)
        return total.sum() if self.reduction == "sum" else total.mean()
