"""GalLoP under DDP: training must see sharded batches (each rank its own part of the few-shot set).

With a distributed sampler the loss is a per-sample mean over equal local batches, so DDP's gradient average is the
gradient on the global batch. Without one, every rank would train on the same batches (N copies of a one-device run):
:func:`require_sharded_training` refuses that and names the fix. Evaluation gathers are in :mod:`gallop.eval_store`.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DistributedSampler


def is_sharded(loader: Any) -> bool:
    """True when ``loader`` splits its items across ranks (a DistributedSampler, or a rank-aware batch sampler)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for s in (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        if isinstance(s, DistributedSampler) or getattr(s, "num_replicas", 1) > 1 or getattr(s, "world_size", 1) > 1:
            return True
    return False


def require_sharded_training(world_size: int, loader: Any) -> None:
    """Raise a ``RuntimeError`` naming the fix when ``world_size > 1`` and ``loader`` is not sharded across ranks."""
    if world_size > 1 and not is_sharded(loader):
        sampler = type(getattr(loader, "sampler", None)).__name__
        raise RuntimeError(
            f"GalLoP under DDP (world_size={world_size}) needs its training batches sharded across ranks, but the "
            f"train dataloader uses a {sampler} with no DistributedSampler: every rank would train on the same "
            f"batches. Set trainer.use_distributed_sampler=true (the trainer configs default it to false for the "
            f"retrieval batch samplers), or train on one device (trainer=gpu, devices=1)."
        )
