"""The non-finite loss guard every training step calls (``nan_policy`` of the LightningModules).

A NaN or Inf loss (a learning rate far too high, a bad input, an overflow) must not be trained on silently: the step
either stops the run with the epoch, step and batch indices and the value of every loss term (``nan_policy="raise"``),
or skips that batch's update, counts it and logs the count as ``train/skipped_batches`` (``nan_policy="skip"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning as L
import torch

log = logging.getLogger(__name__)

NAN_POLICIES = ("raise", "skip")


class NonFiniteLossError(FloatingPointError):
    """A loss came out NaN or Inf."""


def check_nan_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`NAN_POLICIES`, else a ``ValueError`` naming the choices."""
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be 'raise' or 'skip', got {policy!r}")
    return policy


def loss_is_finite(
    module: L.LightningModule,
    total: torch.Tensor,
    parts: Mapping[str, torch.Tensor],
    batch_idx: int,
    policy: str,
) -> bool:
    """True when ``total`` is finite; otherwise raise or count a skipped batch, as ``policy`` says.

    Args:
        module: the module whose training step this is (its epoch and step name the place; a skip increments its
            ``skipped_batches`` attribute and logs ``train/skipped_batches``).
        total: the scalar loss about to be returned.
        parts: the loss terms (detached), printed in the error so the culprit is visible.
        batch_idx: the batch index Lightning passed to ``training_step``.
        policy: "raise" or "skip".

    Raises:
        NonFiniteLossError: ``total`` is NaN or Inf and ``policy == "raise"``.
    """
    if bool(torch.isfinite(total).all()):
        return True
    where = f"epoch {module.current_epoch}, global step {module.global_step}, batch {batch_idx}"
    bad = {k: float(v) for k, v in parts.items()}
    if policy == "raise":
        raise NonFiniteLossError(
            f"non-finite loss at {where}: parts {bad}. Lower the learning rate, check the inputs, or set "
            f"`model.nan_policy=skip` to skip such batches (they are counted in train/skipped_batches)."
        )
    module.skipped_batches = getattr(module, "skipped_batches", 0) + 1
    log.warning("skipping batch with non-finite loss at %s: %s", where, bad)
    module.log("train/skipped_batches", float(module.skipped_batches))
    return False
