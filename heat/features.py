"""The :class:`Features` container every HEAT scorer reads, and the layer4 poolings (docs/methods/heat.md#formulas).

A frozen backbone is run once per (backbone, checkpoint, dataset, split, transform) and its outputs are kept as
``Features`` (see :mod:`heat.cache`). Scorers never run the backbone again: priors and baselines use the pooled
features, the logits and, where they need to recompute logits on new points (SGLD samples, ReAct, DICE, ViM),
the classifier head ``fc_weight`` / ``fc_bias`` stored beside the features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

POOLINGS = ("avg", "std", "max")


def pool_feature_map(fmap: Tensor) -> dict[str, Tensor]:
    """Pool a feature map over its spatial (or token) axis.

    ``fmap`` is ``[N, C, H, W]`` (CNN) or ``[N, T, C]`` (tokens). Returns ``avg`` = mean, ``std`` = **unbiased**
    standard deviation (``torch.std`` default, as in HEAT's ``lib/features.py``) and ``max`` = amax, each ``[N, C]``.
    """
    if fmap.ndim == 4:
        flat = fmap.flatten(2)  # [N, C, HW]
    elif fmap.ndim == 3:
        flat = fmap.transpose(1, 2)  # [N, C, T]
    else:
        raise ValueError(f"feature map must be [N, C, H, W] or [N, T, C]; got shape {tuple(fmap.shape)}")
    if flat.shape[-1] < 2:
        raise ValueError(
            f"the feature map has a single spatial position ({tuple(fmap.shape)}): the unbiased std is undefined. "
            "Use a larger input or a backbone that keeps a spatial map in its last stage."
        )
    return {"avg": flat.mean(-1), "std": flat.std(-1), "max": flat.amax(-1)}


@dataclass
class Features:
    """Cached outputs of a frozen classifier for ``N`` images.

    Attributes:
        logits: ``[N, C]`` classifier logits, or None.
        avg: ``[N, D]`` average-pooled last-stage features (what the linear head sees for ResNets).
        std: ``[N, D]`` unbiased std-pooled features (GMM-std prior), or None.
        max: ``[N, D]`` max-pooled features, or None.
        labels: int64 ``[N]`` class labels (ID train/test), or None (OOD sets).
        fc_weight: ``[C, D]`` and ``fc_bias``: ``[C]``, the backbone's linear head (shared by all rows).
    """

    avg: Tensor | None = None
    std: Tensor | None = None
    max: Tensor | None = None
    logits: Tensor | None = None
    labels: Tensor | None = None
    fc_weight: Tensor | None = None
    fc_bias: Tensor | None = None

    _ROW_FIELDS = ("avg", "std", "max", "logits", "labels")

    def __post_init__(self) -> None:
        n = None
        for name in self._ROW_FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, np.ndarray):
                v = torch.from_numpy(v)
                setattr(self, name, v)
            if not isinstance(v, Tensor):
                raise TypeError(f"Features.{name} must be a torch.Tensor or np.ndarray, got {type(v).__name__}")
            if name == "labels":
                if v.ndim != 1 or v.dtype.is_floating_point:
                    raise ValueError(f"Features.labels must be int64 [N]; got {v.dtype} {tuple(v.shape)}")
            elif v.ndim != 2:
                raise ValueError(f"Features.{name} must be 2-D [N, D]; got shape {tuple(v.shape)}")
            if n is None:
                n = len(v)
            elif len(v) != n:
                raise ValueError(f"Features.{name} has {len(v)} rows but other fields have {n}")
        if n is None:
            raise ValueError("Features needs at least one of avg, std, max, logits")
        if (self.fc_weight is None) != (self.fc_bias is None):
            raise ValueError("give both fc_weight [C, D] and fc_bias [C], or neither")

    def __len__(self) -> int:
        for name in self._ROW_FIELDS:
            v = getattr(self, name)
            if v is not None:
                return len(v)
        return 0

    def pooled(self, pooling: str) -> Tensor:
        """The ``[N, D]`` features for ``pooling`` in {"avg", "std", "max"}, with a clear error if absent."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        v = getattr(self, pooling)
        if v is None:
            raise ValueError(
                f"these Features have no '{pooling}' pooling; re-extract them with heat.cache.extract_features "
                f"(it stores avg, std and max)"
            )
        return v

    def require(self, name: str) -> Tensor:
        v = getattr(self, name)
        if v is None:
            hint = {
                "labels": "fit class-conditional scorers on labelled ID training features",
                "logits": "extract features from a backbone with a classifier head",
                "fc_weight": "extract features with heat.cache.extract_features (it stores the linear head)",
            }.get(name, "re-extract the features")
            raise ValueError(f"these Features have no '{name}': {hint}")
        return v

    def logits_from(self, z: Tensor) -> Tensor:
        """``fc(z) = z W^T + b`` with the stored head (used on SGLD samples and modified features)."""
        w, b = self.require("fc_weight"), self.fc_bias
        return z @ w.to(z).T + b.to(z)

    def subset(self, index: Tensor | np.ndarray | slice) -> Features:
        """Rows ``index`` of every per-row field (the head is shared)."""
        kw = {name: (None if getattr(self, name) is None else getattr(self, name)[index]) for name in self._ROW_FIELDS}
        return replace(self, **kw)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Features:
        """Cast floating fields to ``dtype`` and move everything to ``device``."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.dtype.is_floating_point) else None)
            kw[f.name] = v
        return Features(**kw)

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        """Stack the per-row fields of several ``Features`` (same head)."""
        kw = {}
        for name in Features._ROW_FIELDS:
            vals = [getattr(p, name) for p in parts]
            kw[name] = None if any(v is None for v in vals) else torch.cat(vals)
        return Features(**kw, fc_weight=parts[0].fc_weight, fc_bias=parts[0].fc_bias)
