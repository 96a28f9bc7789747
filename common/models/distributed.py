"""Gathering tensors across DDP ranks for losses that need the global batch.

Rank losses (AP, Recall@k, NDCG...) are not decomposable: under DDP each rank must see the embeddings of every
rank. :func:`all_gather_with_grad` concatenates them with a gradient path back to each rank's own slice.

Why the gradients come out right: every rank computes the same loss ``L`` on the global batch; the backward of the
gather sums, over ranks, the gradient that reaches this rank's slice, which is ``world_size * dL/dz_local``; DDP
then averages parameter gradients over ranks, which divides by ``world_size``. The result is ``dL/dtheta`` of a
single process that sees the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: [b, ...] -> [world * b, ...]
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # works on every backend (gloo has no reduce_scatter)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[b, ...]`` on each rank -> ``[world_size * b, ...]`` in rank order, differentiable. Identity without DDP.

    Every rank must pass the same batch size (our batch samplers guarantee it).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` for labels and indices (no gradient)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """``[n_r, ...]`` on rank ``r`` -> ``[sum_r n_r, ...]`` in rank order, on every rank; the ``n_r`` may differ
    (each rank pads to the largest, the padding is cut off after the gather). Identity without DDP."""
    if world_size() == 1:
        return x
    sizes = all_gather_no_grad(torch.tensor([x.shape[0]], device=x.device))  # [world]
    pad = x.new_zeros((int(sizes.max()) - x.shape[0], *x.shape[1:]))
    parts = all_gather_no_grad(torch.cat([x, pad])).view(len(sizes), -1, *x.shape[1:])  # [world, max_n, ...]
    return torch.cat([parts[r, : int(n)] for r, n in enumerate(sizes)])


def gather_by_index(index: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All-gather ``(index [n], t1 [n, ...], ...)`` from every rank (sizes may differ) and keep one row per distinct
    dataset index, sorted by index: ``(index [N], t1 [N, ...], ...)``.

    Repeated indices are the same item evaluated twice (``DistributedSampler`` pads uneven shards by repeating
    items; an unsharded loader makes every rank evaluate everything) and carry the same values; the first is kept.
    Single process: sorts and de-duplicates only.
    """
    for t in tensors:
        if t.shape[0] != index.shape[0]:
            raise ValueError(f"{index.shape[0]} indices for {t.shape[0]} rows; pass one dataset index per row")
    index, *tensors = [all_gather_uneven(t) for t in (index, *tensors)]
    order = torch.argsort(index, stable=True)
    index = index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return (index[keep], *(t[order][keep] for t in tensors))
