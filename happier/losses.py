"""The happier package's public list of losses: the names configs target (``_target_: happier.losses.<Name>``).

Like every method package's ``losses.py``, a re-export list with no code. Every loss follows the contract of
:mod:`common.losses.base`: ``loss(embeddings [B, D], labels [B, L], ref_embeddings=None, ref_labels=None) -> scalar``,
int64 labels with column 0 the finest level (SupHAP also takes boolean multi-label ``[B, C]``), cosine similarity;
without ``ref_*`` the batch is its own reference set, with ``ref_*`` (a cross-batch memory) the batch ranks the memory.

- :class:`SupHAP`: smooth upper bound of H-AP (Sup-H-AP); its H^- step is a :class:`SupAPStep`.
- :class:`NormalizedSoftmaxLoss`: the clustering term (normalised softmax on proxies, T = 0.05).
- :class:`CSLLoss`: the CSL hierarchical proxy baseline (gamma = 32, per-level margins).

HAPPIER itself is the weighted sum ``(1 - lambda) SupHAP + lambda NormalizedSoftmaxLoss`` that the retrieval module
builds from ``model.losses`` and ``model.loss_weights`` (``configs/model/loss/happier.yaml``).
"""

from common.losses.proxy import NormalizedSoftmaxLoss
from common.ranking import SupAPStep
from happier.csl_loss import CSLLoss
from happier.sup_hap import SupHAP, hrank_step

__all__ = ["SupHAP", "SupAPStep", "NormalizedSoftmaxLoss", "CSLLoss", "hrank_step"]
