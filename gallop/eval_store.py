"""What GalLoP's evaluation steps keep: per split, per key, the per-batch tensors; gathered in dataset order.

Under DDP each rank stores each item's dataset ``index`` with its values. :meth:`EvalStore.gather` gathers values and
indices from every rank (sizes may differ) and keeps one copy of each index in dataset order
(:func:`common.models.distributed.gather_by_index`). This drops the items that ``DistributedSampler`` repeats to pad
uneven shards (they would otherwise count twice in accuracy and FPR), and the copies made when every rank evaluates
the whole unsharded set: the metrics equal those of one process.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from common.data.splits import EvalSplit
from common.models.distributed import gather_by_index


def _key_store() -> defaultdict[str, list[torch.Tensor]]:
    # a module-level factory keeps the store picklable (ddp_spawn)
    return defaultdict(list)


class EvalStore:
    """``{split: {key: [per-batch tensors [B]]}}``; the key ``"index"`` holds the dataset indices of the items."""

    def __init__(self) -> None:
        self._data: dict[EvalSplit, dict[str, list[torch.Tensor]]] = defaultdict(_key_store)

    def add(self, split: EvalSplit, key: str, value: torch.Tensor) -> None:
        self._data[split][key].append(value)

    def splits(self) -> list[EvalSplit]:
        """The splits stored so far, in the order their first batch came."""
        return list(self._data)

    def keys(self, split: EvalSplit) -> list[str]:
        """The value keys of ``split`` (without ``"index"``)."""
        return [k for k in self._data.get(split, {}) if k != "index"]

    def gather(self, split: EvalSplit, key: str) -> torch.Tensor | None:
        """``key`` of ``split`` from every rank, one value per dataset index, in dataset order (``[N]``); None if
        nothing was stored. Without indices (one process, checked when storing): the values as stored."""
        store = self._data.get(split, {})
        chunks = store.get(key, [])
        if not chunks:
            return None
        x = torch.cat(chunks)  # [n_local]
        if not store.get("index"):
            return x
        return gather_by_index(torch.cat(store["index"]), x)[1]
