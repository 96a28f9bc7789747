"""All roadmap losses, one import point. Signature: ``loss(embeddings [B, D], labels [B], ref_embeddings=None,
ref_labels=None) -> scalar``; cosine similarity; with no reference the batch is its own reference (self-pair
excluded, except that the AP losses keep the query as its own positive when ``include_query=True``, the original
behaviour); with a reference (a memory) queries are the batch and the references are ``ref_*``."""

from roadmap.ap_losses import HeavisideAP, SmoothAP, SupAP
from roadmap.blackbox_ap import BlackBoxAP
from roadmap.calibration import CalibrationLoss
from roadmap.fastap import FastAP
from roadmap.nsm import NormalizedSoftmaxLoss
from roadmap.pair_losses import MultiSimilarityLoss, TripletLoss
from roadmap.roadmap_loss import ROADMAPLoss
from roadmap.softbin_ap import SoftBinAP
from roadmap.suprank import SupNDCG, SupRecall

__all__ = [
    "SupAP",
    "SmoothAP",
    "HeavisideAP",
    "CalibrationLoss",
    "ROADMAPLoss",
    "FastAP",
    "BlackBoxAP",
    "SoftBinAP",
    "TripletLoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "SupRecall",
    "SupNDCG",
]
