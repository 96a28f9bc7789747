"""ROADMAP = SupAP + calibration (Ramzi et al. 2021, Eq. 8).

    L = scale * [(1 - lam) * L_SupAP + lam * L_calibr]

Recipes (configs/model/loss/): the NeurIPS code (``roadmap/config/loss/roadmap.yaml``) sums both with weight 1,
i.e. ``lam=0.5, scale=2``; the TPAMI/SupRank code uses weights 0.9/0.1, i.e. ``lam=0.1, scale=1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from roadmap._inputs import fp32_forward
from roadmap.ap_losses import SupAP
from roadmap.calibration import CalibrationLoss


class ROADMAPLoss(nn.Module):
    """Weighted sum of :class:`SupAP` and :class:`CalibrationLoss`.

    Args:
        lam: weight of the calibration term, in [0, 1].
        scale: global factor (2.0 with lam=0.5 gives the 1:1 NeurIPS recipe).
        supap, calibration: the two losses (built from config); defaults are the class defaults.
    """

    def __init__(
        self,
        lam: float = 0.5,
        scale: float = 2.0,
        supap: nn.Module | None = None,
        calibration: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.lam, self.scale = lam, scale
        self.supap = supap if supap is not None else SupAP()
        self.calibration = calibration if calibration is not None else CalibrationLoss()

    @fp32_forward
    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        ap = self.supap(embeddings, labels, ref_embeddings, ref_labels)
        cal = self.calibration(embeddings, labels, ref_embeddings, ref_labels)
        return self.scale * ((1.0 - self.lam) * ap + self.lam * cal)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, scale={self.scale}"
