"""Public losses of the HAPPIER package (architecture.md): one signature for all,

    loss(embeddings [B, D], labels [B, L], ref_embeddings=None, ref_labels=None) -> scalar tensor

labels are int64 with column 0 the finest level; similarity is cosine. Without ``ref_*`` the batch is its own
reference set; with ``ref_*`` (a cross-batch memory) the batch queries rank the memory.

- :class:`SupHAP`: smooth upper bound of H-AP (Sup-H-AP).
- :class:`ClusterLoss`: normalised-softmax clustering loss on proxies (T = 0.05).
- :class:`HAPPIERLoss`: (1 - lambda) Sup-H-AP + lambda clustering.
- :class:`CSLLoss`: the CSL hierarchical proxy baseline (gamma = 32, per-level margins).
"""

from happier.cluster_loss import ClusterLoss
from happier.csl_loss import CSLLoss
from happier.happier_loss import HAPPIERLoss
from happier.sup_hap import SupHAP, hrank_step

__all__ = ["SupHAP", "ClusterLoss", "HAPPIERLoss", "CSLLoss", "hrank_step"]
