"""Numerics every embedding loss shares: fp32 computation, and an L2 normalisation a zero embedding cannot blow up.

* :func:`upcast` casts fp16/bf16 inputs to fp32; the loss contract (:mod:`common.losses.base`) applies it and runs
  every loss with autocast off. Rank sums over a memory (tens of thousands of terms up to ~200 each) overflow fp16,
  and mixed inputs (an fp32 batch against a fp16 memory, fp16 embeddings against fp32 proxies) would not even
  multiply. The gradient flows back to the low-precision tensors through the cast.
* :func:`l2_normalize` is ``F.normalize`` except for rows whose norm is below ``eps``: those have no direction, so
  they come out as the zero vector (a cosine of 0 with everything, as ``F.normalize`` gives) **with zero gradient**.
  ``F.normalize`` divides such a row by its ``eps`` of ``1e-12`` instead, so one all-zero embedding in a batch sends a
  gradient of ``1e12`` times the upstream one into the network (``3.8e11`` for SupAP, ``inf`` for ROADMAP). Rows at or
  above ``eps`` are divided by their norm exactly as ``F.normalize`` does (same values, same gradient), so the
  gradient through the normalisation is at most ``|upstream| / eps`` for every row.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LOW_PRECISION", "NORM_EPS", "l2_normalize", "upcast"]

LOW_PRECISION = (torch.float16, torch.bfloat16)
NORM_EPS = 1e-6


def upcast(x: Tensor | None) -> Tensor | None:
    """fp16/bf16 tensors as fp32; anything else unchanged."""
    return x.float() if isinstance(x, Tensor) and x.dtype in LOW_PRECISION else x


def l2_normalize(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """``x / |x|`` along ``dim``; rows with ``|x| < eps`` become 0 with zero gradient (see the module docstring)."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    # x / inf = 0 and its gradient is 0 (no 0 * inf): the degenerate rows drop out of the backward pass
    return x / torch.where(norm >= eps, norm, torch.full_like(norm, float("inf")))
