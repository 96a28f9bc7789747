"""All roadmap losses, one import point. Signature: ``loss(embeddings [B, D], labels [B], ref_embeddings=None,
ref_labels=None) -> scalar``; cosine similarity; in-batch self-pairs excluded; a reference set acts as a memory."""

from roadmap.ap_losses import HeavisideAP, SmoothAP, SupAP
from roadmap.calibration import CalibrationLoss
from roadmap.roadmap_loss import ROADMAPLoss

__all__ = ["SupAP", "SmoothAP", "HeavisideAP", "CalibrationLoss", "ROADMAPLoss"]
