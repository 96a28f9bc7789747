"""Input checks and score/mask construction shared by every roadmap loss.

All losses take ``(embeddings [B, D], labels [B], ref_embeddings=None, ref_labels=None)``. Similarity is cosine
(embeddings are L2-normalised here). With no reference, the batch is its own reference; with a reference (a
memory), queries are the batch and references are ``ref_embeddings``.

Zero embeddings: an embedding whose norm is below ``common.losses.numerics.NORM_EPS`` (1e-6) is handled, not refused:
it is normalised to the zero vector (cosine 0 with every item) and receives no gradient, so one dead embedding in a
batch neither changes the other items' values nor sends a ``1/eps`` gradient into the network
(:func:`common.losses.numerics.l2_normalize`). fp16/bf16 inputs are computed in fp32 (:func:`fp32_forward`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.losses.numerics import fp32_forward, l2_normalize, upcast
from common.ranking import label_match, valid_reference_mask

__all__ = ["PairInputs", "fp32_forward", "prepare", "reference_mask", "zero_loss"]


@dataclass
class PairInputs:
    """Normalised queries/references, their scores and label masks. ``Q = B``, ``M = B`` or the memory size."""

    queries: Tensor  # [Q, D], L2-normalised
    refs: Tensor  # [M, D], L2-normalised
    q_labels: Tensor  # [Q] (finest level)
    r_labels: Tensor  # [M]
    scores: Tensor  # [Q, M] cosine similarities
    pos: Tensor  # [Q, M] bool, same label
    in_batch: bool  # True when the batch is its own reference (M = Q, item j = query j)


def _check(embeddings: Tensor, labels: Tensor, name: str) -> Tensor:
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"{name}embeddings must be a [B, D] float tensor, got {shape}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name}embeddings must be floating point, got {embeddings.dtype}")
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name}labels must be integer class ids, got dtype {labels.dtype}; use `.long()`")
    if labels.ndim == 2:  # hierarchical [B, L]: rank losses here use the finest level (column 0)
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{name}labels must have shape [B] (or [B, L]) with B = {embeddings.shape[0]} to match "
            f"{name}embeddings, got {tuple(labels.shape)}"
        )
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name}embeddings contain NaN or Inf; check the model output (e.g. lower the lr, use fp32)")
    return labels


def prepare(
    embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
) -> PairInputs:
    """Validate the inputs, L2-normalise and build ``scores = q @ r.T`` and the positive mask.

    Low-precision inputs (fp16/bf16, e.g. under autocast) are computed in fp32, like the original code's autocast
    of ``exp`` and reciprocals.
    """
    labels = _check(embeddings, labels, "")
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("give both ref_embeddings and ref_labels, or neither")
    embeddings = upcast(embeddings)
    queries = l2_normalize(embeddings, dim=1)
    if ref_embeddings is None:
        refs, r_labels, in_batch = queries, labels, True
    else:
        r_labels = _check(ref_embeddings, ref_labels, "ref_")
        if ref_embeddings.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_embeddings have dim {ref_embeddings.shape[1]} but embeddings have dim {embeddings.shape[1]}"
            )
        refs = l2_normalize(ref_embeddings.to(queries.dtype), dim=1)
        in_batch = False
    scores = queries @ refs.T
    return PairInputs(queries, refs, labels, r_labels, scores, label_match(labels, r_labels), in_batch)


def reference_mask(inp: PairInputs, include_query: bool) -> Tensor:
    """``[Q, M]`` references a query ranks: in-batch, the query itself only if ``include_query``; memory: all."""
    exclude = inp.in_batch and not include_query
    return valid_reference_mask(inp.scores.shape[0], inp.scores.shape[1], exclude, device=inp.scores.device)


def zero_loss(inp: PairInputs) -> Tensor:
    """A zero that stays connected to the graph (finite gradient 0) for degenerate batches."""
    return inp.scores.sum() * 0.0
