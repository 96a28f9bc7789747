"""GalLoP inference: class probabilities and the MCM / L-MCM / GL-MCM OOD scores (docs/methods/gallop.md#formulas).

With ``g [B, K, M_g]`` global and ``l [B, P, K, M_l]`` local cosines, ``s`` the CLIP logit scale:

- Prediction: ``softmax(s * (g_hat + l_hat) / 2)``, ``g_hat = mean_m g``, ``l_hat = mean_m topk_reduce(l)``.
- MCM (Ming et al. 2022): ``-max_k softmax_k(g_hat / T)``.
- L-MCM (Miyai et al. 2023, GL-MCM): ``-max_{p, k} softmax_k(l_bar[:, p] / T)``, ``l_bar = mean_m l`` (all patches).
- GL-MCM = MCM + L-MCM.

Scores are "higher = more OOD" (the sign used by ``common.metrics.ood.ood_metrics``). ``T = 1`` on raw cosines,
as GalLoP's ``ood_temp_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gallop.global_local_loss import topk_reduce


def predict_proba(
    global_logits: torch.Tensor,
    local_logits: torch.Tensor | None,
    logit_scale: float | torch.Tensor,
    ks: Sequence[int] = (5, 10, 15, 20),
) -> torch.Tensor:
    """``softmax(s (g_hat + l_hat) / 2)`` ``[B, K]``; global only (``softmax(s g_hat)``) when ``local_logits`` is None."""
    g = global_logits.mean(dim=-1)
    if local_logits is None:
        return (logit_scale * g).softmax(dim=-1)
    loc = topk_reduce(local_logits, ks).mean(dim=-1)
    return (logit_scale * (g + loc) / 2).softmax(dim=-1)


def mcm_score(global_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MCM: ``-max_k softmax(g_hat / T)_k``, ``[B]`` (higher = more OOD). ``global_logits [B, K]`` or ``[B, K, M]``."""
    g = global_logits.mean(dim=-1) if global_logits.ndim == 3 else global_logits
    return -(g / temperature).softmax(dim=-1).amax(dim=-1)


def local_mcm_score(local_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L-MCM: ``-max_{p,k} softmax_k(l_bar_p / T)``, ``[B]``. ``local_logits [B, P, K]`` or ``[B, P, K, M]``."""
    loc = local_logits.mean(dim=-1) if local_logits.ndim == 4 else local_logits
    return -(loc / temperature).softmax(dim=-1).amax(dim=(1, 2))


def gl_mcm_score(global_logits: torch.Tensor, local_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """GL-MCM = MCM + L-MCM, ``[B]`` (higher = more OOD)."""
    return mcm_score(global_logits, temperature) + local_mcm_score(local_logits, temperature)


def ood_scores(
    global_logits: torch.Tensor, local_logits: torch.Tensor | None, temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """All available scores: ``{"mcm"}``, plus ``{"l_mcm", "gl_mcm"}`` when local cosines are given."""
    out = {"mcm": mcm_score(global_logits, temperature)}
    if local_logits is not None:
        out["l_mcm"] = local_mcm_score(local_logits, temperature)
        out["gl_mcm"] = out["mcm"] + out["l_mcm"]
    return out
