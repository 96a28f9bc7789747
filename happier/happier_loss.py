"""HAPPIER's training loss: Sup-H-AP plus the clustering (decomposability) loss.

    L_HAPPIER = (1 - lambda) * L_SupHAP + lambda * L_clust          (lambda = 0.1; 0.5 for DyML-Animal)

L_SupHAP is :class:`happier.sup_hap.SupHAP` on the batch (or the batch against a memory), L_clust is
:class:`happier.cluster_loss.ClusterLoss` on the fine labels. The proxies of the clustering loss are parameters of
this module, so ``RetrievalModule`` gives them their own parameter group (``model.loss_param_groups.<name>``) and
they are saved in checkpoints.
"""

from __future__ import annotations

from torch import Tensor, nn

from common.losses.numerics import fp32_forward
from happier.cluster_loss import ClusterLoss
from happier.sup_hap import SupHAP


class HAPPIERLoss(nn.Module):
    """Args:
    num_classes: fine training classes (size of the clustering loss's proxy table), if ``cluster`` is not given.
    embedding_size: D, if ``cluster`` is not given.
    weight: lambda, the weight of the clustering loss.
    sup_hap: the Sup-H-AP module (default: ``SupHAP()`` with HAPPIER's SOP/DyML parameters).
    cluster: the clustering loss (default: ``ClusterLoss(num_classes, embedding_size, temperature=0.05)``).

    After each call, :attr:`last_terms` holds the detached values ``{"sup_hap": ..., "cluster": ...}``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_size: int | None = None,
        weight: float = 0.1,
        sup_hap: SupHAP | None = None,
        cluster: ClusterLoss | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight (lambda) must lie in [0, 1], got {weight}")
        if cluster is None:
            if num_classes is None or embedding_size is None:
                raise ValueError("HAPPIERLoss needs num_classes and embedding_size (or a ready `cluster` loss)")
            cluster = ClusterLoss(num_classes, embedding_size)
        self.weight = float(weight)
        self.sup_hap = sup_hap if sup_hap is not None else SupHAP()
        self.cluster = cluster
        self.last_terms: dict[str, Tensor] = {}

    @fp32_forward
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss. With a memory (``ref_*``) Sup-H-AP ranks against it; the proxy term only sees the batch."""
        hap = self.sup_hap(embeddings, labels, ref_embeddings, ref_labels)
        clust = self.cluster(embeddings, labels)
        self.last_terms = {"sup_hap": hap.detach(), "cluster": clust.detach()}
        return (1.0 - self.weight) * hap + self.weight * clust
