"""What one evaluation batch contributes, per item: OOD scores (ID and OOD splits) and top-1 correctness (ID and
domain splits).

- OOD scores: ``mcm``, ``l_mcm``, ``gl_mcm`` at temperature ``T`` (:func:`gallop.scores.ood_scores`);
- ``correct``: top-1 of ``softmax(s (g_hat + l_hat) / 2)`` (global only for CoOp and zero-shot CLIP, whose local cosines serve L-MCM / GL-MCM only;
  :func:`gallop.scores.predict_proba`); with local cosines also ``correct_global`` and ``correct_local``;
- a domain split whose dataset has ``class_subset`` (ImageNet-A/R's 200 classes) is scored on those classes only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from common.data.splits import EvalSplit
from gallop.global_local_loss import topk_reduce
from gallop.scores import ood_scores, predict_proba


def restrict_classes(
    g: torch.Tensor, loc: torch.Tensor | None, labels: torch.Tensor, class_subset: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Keep the cosines of ``class_subset`` (``g [B, C, n_g]`` -> ``[B, C', n_g]``, ``loc [B, P, C, n_l]``) and
    renumber ``labels [B]`` to positions in ``class_subset``."""
    sub = torch.as_tensor(list(class_subset), device=g.device)
    lut = torch.full((int(sub.max()) + 1,), -1, dtype=torch.long, device=g.device)
    lut[sub] = torch.arange(len(sub), device=g.device)
    return g[:, sub], (loc[:, :, sub] if loc is not None else None), lut[labels]


def batch_values(
    g: torch.Tensor,
    loc: torch.Tensor | None,
    labels: torch.Tensor,
    split: EvalSplit,
    *,
    logit_scale: float,
    topk: Sequence[int],
    ood_temperature: float,
    predict_with_local: bool = True,
    class_subset: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-item values ``[B]`` of one batch of ``split`` (keys: see the module docstring).

    ``g``/``loc``: the net's global and local cosines; ``labels`` int64 ``[B]`` or ``[B, L]`` (column 0 is used);
    ``predict_with_local=False`` (zero-shot CLIP, CoOp) predicts from the global cosines (local ones only serve GL-MCM).
    """
    out: dict[str, torch.Tensor] = {}
    if split.kind in ("id", "ood"):
        out.update({k: v.float() for k, v in ood_scores(g, loc, ood_temperature).items()})
    if split.kind == "ood":
        return out
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if class_subset is not None and split.kind == "domain":
        g, loc, labels = restrict_classes(g, loc, labels, class_subset)
    if not predict_with_local:
        loc = None
    out["correct"] = (predict_proba(g, loc, logit_scale, topk).argmax(-1) == labels).float()
    if loc is not None:
        out["correct_global"] = (g.mean(-1).argmax(-1) == labels).float()
        out["correct_local"] = (topk_reduce(loc, topk).mean(-1).argmax(-1) == labels).float()
    return out
