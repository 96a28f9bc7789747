"""Cross-batch memory (XBM, Wang et al. CVPR 2020) as used by ROADMAP.

The memory stores *detached* embeddings and labels. The training step enqueues the current batch *before* reading
the memory, so each query also finds itself in the reference set (as in the original code). Two modes:

* ``unique=True``: one slot per dataset image, addressed by the dataset ``index`` (the original keyed a dict by
  image path); the memory holds the latest embedding of every image seen so far. ``size`` must be at least the
  train-set size (SOP 59551, CUB 5824).
* ``unique=False``: a FIFO ring buffer of the last ``size`` items (iNat: 60000).

The memory loss is added with ``weight`` from epoch ``activate_after`` on. State (embeddings, labels, fill state,
write pointer) lives in registered buffers, so it is saved in and restored from checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class XBM(nn.Module):
    """Cross-batch memory with ``update(embeddings, labels, indices)``, ``get()``, ``is_active(epoch)``, ``weight``.

    Args:
        size: number of slots (FIFO length, or the dataset size when ``unique``).
        embedding_dim: D of the stored embeddings.
        weight: factor of the memory loss.
        activate_after: first epoch (0-based) at which the memory loss is used.
        unique: one slot per dataset index (True) or FIFO (False).
        label_levels: L, the number of label columns stored (1 = flat labels).
    """

    def __init__(
        self,
        size: int,
        embedding_dim: int,
        weight: float = 1.0,
        activate_after: int = 0,
        unique: bool = False,
        label_levels: int = 1,
    ) -> None:
        super().__init__()
        if size < 1 or embedding_dim < 1 or label_levels < 1:
            raise ValueError(
                f"size, embedding_dim and label_levels must be >= 1, got {size}, {embedding_dim}, {label_levels}"
            )
        self.size, self.embedding_dim, self.unique, self.label_levels = (
            int(size),
            int(embedding_dim),
            unique,
            label_levels,
        )
        self.weight = float(weight)
        self.activate_after = int(activate_after)
        self.register_buffer("embeddings", torch.zeros(self.size, self.embedding_dim))
        self.register_buffer("labels", torch.full((self.size, label_levels), -1, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(self.size, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def is_active(self, epoch: int) -> bool:
        """True from epoch ``activate_after`` on."""
        return epoch >= self.activate_after

    def __len__(self) -> int:
        return int(self.filled.sum())

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor, indices: Tensor | None = None) -> None:
        """Enqueue a batch: ``embeddings [B, D]`` (stored detached), ``labels [B]`` or ``[B, L]``, ``indices [B]``."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"XBM expects embeddings [B, {self.embedding_dim}], got {tuple(embeddings.shape)}")
        labels = torch.as_tensor(labels, device=embeddings.device)
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.shape != (embeddings.shape[0], self.label_levels):
            raise ValueError(
                f"XBM expects labels [B] or [B, {self.label_levels}] with B={embeddings.shape[0]}, got "
                f"{tuple(labels.shape)}; set memory.label_levels to the number of label columns"
            )
        emb = embeddings.detach().to(self.embeddings.dtype)
        labels = labels.long()
        if self.unique:
            if indices is None:
                raise ValueError("XBM(unique=True) needs the dataset indices of the batch (batch['index'])")
            idx = torch.as_tensor(indices, device=self.embeddings.device).long().reshape(-1)
            if idx.numel() != emb.shape[0]:
                raise ValueError(f"got {idx.numel()} indices for {emb.shape[0]} embeddings")
            if int(idx.min()) < 0 or int(idx.max()) >= self.size:
                raise ValueError(
                    f"dataset index {int(idx.max())} does not fit a unique memory of size {self.size}; "
                    f"set memory.size to the train-set size"
                )
            self.embeddings[idx] = emb
            self.labels[idx] = labels
            self.filled[idx] = True
            return
        B = emb.shape[0]
        if B >= self.size:  # keep only the last `size` items of the batch
            emb, labels, B = emb[-self.size :], labels[-self.size :], self.size
        pos = (int(self.ptr) + torch.arange(B, device=self.embeddings.device)) % self.size
        self.embeddings[pos] = emb
        self.labels[pos] = labels
        self.filled[pos] = True
        self.ptr.fill_((int(self.ptr) + B) % self.size)

    def get(self) -> tuple[Tensor, Tensor]:
        """The stored items: ``(embeddings [M, D], labels [M] or [M, L])`` (M = number of filled slots)."""
        if bool(self.filled.all()):
            emb, lab = self.embeddings, self.labels
        else:
            emb, lab = self.embeddings[self.filled], self.labels[self.filled]
        return emb, (lab[:, 0] if self.label_levels == 1 else lab)

    def reset(self) -> None:
        """Empty the memory."""
        self.filled.zero_()
        self.labels.fill_(-1)
        self.embeddings.zero_()
        self.ptr.zero_()

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, embedding_dim={self.embedding_dim}, weight={self.weight}, "
            f"activate_after={self.activate_after}, unique={self.unique}, label_levels={self.label_levels}"
        )
