"""The retrieval-loss contract: one input check, one fp32 rule, one cosine matrix per step, one zero.

Every retrieval loss (ROADMAP, SupRank, HAPPIER and the baselines) subclasses :class:`RetrievalLoss` and writes only
``compute(inputs: LossInputs) -> scalar``. The base class gives it the house signature

    loss(embeddings [B, D], labels, ref_embeddings=None, ref_labels=None) -> scalar tensor

and does, once, what every loss needs before its formula:

* **checks** (:func:`prepare_inputs`): embeddings ``[B, D]``, floating point, finite; labels int64 ``[B]`` or
  ``[B, L]`` (column 0 the finest level) or, for the losses that declare ``supports_multilabel``, a boolean
  multi-hot ``[B, C]`` matrix; a reference (memory) given as both ``ref_embeddings`` and ``ref_labels`` with the same
  embedding size and the same label kind and width. Every error names the problem and the fix.
* **precision**: autocast off and fp16/bf16 inputs cast to fp32 (:mod:`common.losses.numerics`): rank sums over a
  memory overflow fp16.
* **normalisation**: :func:`common.losses.numerics.l2_normalize`, so an all-zero embedding gets cosine 0 with every
  item and no gradient instead of a ``1/eps`` one.
* **the prepared tensors** (:class:`LossInputs`): normalised queries and references, the cosine matrix
  ``scores = q @ r.T`` and the positive mask (same finest label), each built on first use and then shared.
  :class:`~common.models.retrieval_module.RetrievalModule` prepares one ``LossInputs`` per step and passes it to
  every term (:meth:`RetrievalLoss.from_inputs`), so the cosine matrix is computed once however many terms there are.
* **a zero with graph** (:meth:`LossInputs.zero`) for batches with nothing to rank (no positive, empty batch): a 0
  whose gradient is 0, so a step never fails on a degenerate batch.

Without a reference the batch is its own reference (``in_batch``; item ``j`` of the reference is query ``j``); with
one (a cross-batch memory) the queries are the batch and the references are the memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from common.losses.numerics import l2_normalize, upcast
from common.ranking import label_match, valid_reference_mask

__all__ = ["LossInputs", "RetrievalLoss", "fp32_region", "prepare_inputs"]


@contextlib.contextmanager
def fp32_region(device_type: str) -> Iterator[None]:
    """Autocast off: a loss computed inside sees fp32 tensors only (inputs are upcast by :func:`prepare_inputs`)."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


@dataclass
class LossInputs:
    """Checked fp32 inputs of one loss call and the tensors built from them on first use (then shared).

    ``Q`` queries (the batch), ``M`` references (the batch again, or the memory).
    """

    embeddings: Tensor  # [Q, D] fp32, as given (not normalised)
    labels: Tensor  # [Q, L] int64 (flat labels are [Q, 1]) or [Q, C] bool (multi-label)
    ref_embeddings: Tensor  # [M, D]; the same tensor as ``embeddings`` in-batch
    ref_labels: Tensor  # [M, L] or [M, C]
    in_batch: bool  # True when the batch is its own reference (M = Q, reference j = query j)

    @property
    def multilabel(self) -> bool:
        """Boolean multi-hot labels ``[N, C]`` (HAPPIER's multi-label extension)."""
        return self.labels.dtype == torch.bool

    @property
    def q_labels(self) -> Tensor:
        """``[Q]`` finest-level labels of the queries (column 0)."""
        return self.labels[:, 0]

    @property
    def r_labels(self) -> Tensor:
        """``[M]`` finest-level labels of the references (column 0)."""
        return self.ref_labels[:, 0]

    @cached_property
    def queries(self) -> Tensor:
        """``[Q, D]`` L2-normalised queries (a zero row stays zero, with no gradient)."""
        return l2_normalize(self.embeddings, dim=1)

    @cached_property
    def refs(self) -> Tensor:
        """``[M, D]`` L2-normalised references (the queries themselves in-batch)."""
        return self.queries if self.in_batch else l2_normalize(self.ref_embeddings, dim=1)

    @cached_property
    def scores(self) -> Tensor:
        """``[Q, M]`` cosine similarities ``s_qj``."""
        return self.queries @ self.refs.T

    @cached_property
    def pos(self) -> Tensor:
        """``[Q, M]`` bool: same finest label (the self-pair included in-batch; see :meth:`reference_mask`).

        Multi-label: at least one shared label, the binary relevance of the multi-label retrieval literature.
        """
        if self.multilabel:
            return (self.labels.float() @ self.ref_labels.float().T) > 0
        return label_match(self.q_labels, self.r_labels)

    def reference_mask(self, include_query: bool) -> Tensor:
        """``[Q, M]`` references a query ranks: all, except itself in-batch when ``include_query`` is False."""
        q, m = self.scores.shape
        return valid_reference_mask(q, m, self.in_batch and not include_query, device=self.scores.device)

    def zero(self) -> Tensor:
        """A 0 connected to the graph of the embeddings (gradient 0) for a batch with nothing to rank."""
        return self.embeddings.sum() * 0.0


def _check_embeddings(embeddings: Tensor, name: str) -> None:
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"{name}embeddings must be a [B, D] float tensor, got {shape}; flatten the model output")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name}embeddings must be floating point, got {embeddings.dtype}; cast with `.float()`")
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name}embeddings contain NaN or Inf; check the model output (e.g. lower the lr, use fp32)")


def _check_labels(labels, embeddings: Tensor, name: str) -> Tensor:
    """Labels as ``[B, L]`` int64 (``[B]`` becomes ``[B, 1]``) or ``[B, C]`` bool."""
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.dtype == torch.bool and labels.ndim != 2:
        raise ValueError(f"{name}labels: boolean multi-label labels must be a [B, C] matrix, got {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"{name}labels must be integer class ids, got dtype {labels.dtype}; use `.long()`")
    if labels.ndim not in (1, 2) or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{name}labels must have shape [B] or [B, L] (column 0 = finest level) with B = {embeddings.shape[0]} "
            f"to match the {name}embeddings rows (one label row per embedding), got {tuple(labels.shape)}"
        )
    if labels.ndim == 1:
        labels = labels[:, None]
    return labels if labels.dtype == torch.bool else labels.long()


def prepare_inputs(
    embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
) -> LossInputs:
    """Check the inputs of a loss call and wrap them, in fp32, into :class:`LossInputs` (see the module docstring)."""
    _check_embeddings(embeddings, "")
    labels = _check_labels(labels, embeddings, "")
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("give both ref_embeddings and ref_labels (a memory), or neither")
    embeddings = upcast(embeddings)
    if ref_embeddings is None:
        return LossInputs(embeddings, labels, embeddings, labels, in_batch=True)
    _check_embeddings(ref_embeddings, "ref_")
    ref_labels = _check_labels(ref_labels, ref_embeddings, "ref_")
    if ref_embeddings.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"ref_embeddings have dim {ref_embeddings.shape[1]} but embeddings have dim {embeddings.shape[1]}"
        )
    if ref_labels.dtype != labels.dtype or ref_labels.shape[1] != labels.shape[1]:
        raise ValueError(
            f"the memory must match the batch: labels {labels.dtype} {tuple(labels.shape)} vs "
            f"ref_labels {ref_labels.dtype} {tuple(ref_labels.shape)}; store the same label columns in the memory"
        )
    return LossInputs(embeddings, labels, upcast(ref_embeddings).to(embeddings.dtype), ref_labels, in_batch=False)


class RetrievalLoss(nn.Module):
    """Base of every retrieval loss: subclasses implement :meth:`compute` (see the module docstring).

    Class attribute ``supports_multilabel``: whether boolean multi-hot ``[B, C]`` labels are meaningful to the loss:
    Sup-H-AP (graded: the number of shared labels), and the losses that read only :attr:`LossInputs.pos` (the AP
    surrogates, calibration: a positive shares at least one label). Every other loss refuses them with an error
    that says which loss to use.
    """

    supports_multilabel: bool = False

    def compute(self, inputs: LossInputs) -> Tensor:
        """The loss on checked fp32 inputs; a scalar tensor."""
        raise NotImplementedError

    def from_inputs(self, inputs: LossInputs) -> Tensor:
        """:meth:`compute` on inputs prepared once and shared by several losses (call inside :func:`fp32_region`)."""
        if inputs.multilabel and not self.supports_multilabel:
            raise ValueError(
                f"{type(self).__name__} takes integer class ids [B] or [B, L]; boolean multi-label [B, C] labels are "
                f"supported by SupHAP (graded relevance) and by the binary AP surrogates and calibration of roadmap.losses "
                f"(positive = at least one shared label)"
            )
        return self.compute(inputs)

    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_embeddings: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Tensor:
        device_type = embeddings.device.type if isinstance(embeddings, Tensor) else "cpu"
        with fp32_region(device_type):
            return self.from_inputs(prepare_inputs(embeddings, labels, ref_embeddings, ref_labels))
