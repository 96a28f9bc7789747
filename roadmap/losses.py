"""The roadmap package's public list of losses: the names configs target (``_target_: roadmap.losses.<Name>``).

Every method package has a ``losses.py`` like this one: it re-exports the method's losses and holds no code; the
implementations live in modules named for what they hold, and every retrieval loss follows the contract of
:mod:`common.losses.base` (signature ``loss(embeddings [B, D], labels [B] or [B, L], ref_embeddings=None,
ref_labels=None) -> scalar``, cosine similarity, the batch as its own reference unless a memory is given).
ROADMAP itself is not a class: it is the weighted sum ``(1 - lambda) SupAP + lambda CalibrationLoss`` that the
retrieval module builds from ``model.losses`` and ``model.loss_weights`` (``configs/model/loss/roadmap.yaml``).
"""

from common.losses.proxy import NormalizedSoftmaxLoss
from common.ranking import SupAPStep
from roadmap.ap_losses import HeavisideAP, SmoothAP, SupAP
from roadmap.blackbox_ap import BlackBoxAP
from roadmap.calibration import CalibrationLoss
from roadmap.fastap import FastAP
from roadmap.pair_losses import MultiSimilarityLoss, TripletLoss
from roadmap.softbin_ap import SoftBinAP
from roadmap.suprank import SupNDCG, SupRecall

__all__ = [
    "SupAP",
    "SupAPStep",
    "SmoothAP",
    "HeavisideAP",
    "CalibrationLoss",
    "FastAP",
    "BlackBoxAP",
    "SoftBinAP",
    "TripletLoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "SupRecall",
    "SupNDCG",
]
