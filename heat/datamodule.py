"""A LightningDataModule over cached Features (no backbone at train time).

Training batches are dicts ``{"z": [B, D] pooled features, "y": [B] labels}``; validation batches are ID-test and OOD
features stacked with ``"is_ood"`` flags. Features come either as objects or from the on-disk cache
(:func:`heat.cache.load_cached`), located by the same key fields used at extraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.splits import EvalSplit
from heat.cache import cache_key, load_cached
from heat.features import Features


class PooledDataset(Dataset):
    """Rows of one pooling of Features, fetched a whole batch at a time from (memory-mapped) storage."""

    def __init__(self, feats: Features, pooling: str, is_ood: bool | None = None) -> None:
        self.z = feats.pooled(pooling)
        self.y = feats.labels
        self.is_ood = is_ood

    def __len__(self) -> int:
        return len(self.z)

    def __getitems__(self, idx: list[int]) -> dict:
        i = torch.as_tensor(sorted(idx)) if not isinstance(idx, torch.Tensor) else idx
        out = {"z": self.z[i].float()}
        if self.y is not None:
            out["y"] = self.y[i].long()
        if self.is_ood is not None:
            out["is_ood"] = torch.full((len(i),), self.is_ood, dtype=torch.bool)
        return out

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def _identity(batch):
    return batch


def load_features(spec: Features | Mapping, cache_dir: str | None) -> Features:
    """Features as given, or loaded from the cache with ``spec`` = {backbone, checkpoint, dataset, split, transform}
    (the fields of :func:`heat.cache.cache_key`; ``transform`` instantiated or as a ``_target_`` config)."""
    if isinstance(spec, Features):
        return spec
    fields = {k: spec.get(k) for k in ("backbone", "checkpoint", "dataset", "split", "transform")}
    key = cache_key(**fields)
    feats = load_cached(cache_dir, dataset=spec["dataset"], split=spec["split"], key=key)
    if feats is None:
        raise FileNotFoundError(
            f"no usable cached features for {dict(spec)} (key {key}) under '{cache_dir}' (missing, incomplete, or "
            f"corrupt as a warning above says). Extract them first with "
            f"`python -m heat.extract experiment=heat/<row>` (`make features-heat-<cifar10|cifar100|imagenet>`)."
        )
    return feats


class FeatureDataModule(L.LightningDataModule):
    """Cached ID-train features for training; ID-test and OOD features for validation.

    Args:
        train: Features or a cache spec dict (see :func:`load_features`).
        pooling: which pooled features the EBM sees ("avg" or "std").
        val_id, val_ood: optional ID test features and a list of OOD features (or specs); ood_names label them
            (default: each spec's ``dataset``). :attr:`test_splits` names the evaluation loaders
            (:class:`common.data.splits.EvalSplit`, kinds ``id`` then ``ood``).
        batch_size: training batch size; drop_last keeps SGLD batch shapes fixed.
    """

    def __init__(
        self,
        train: Features | Mapping,
        pooling: str = "avg",
        val_id: Features | Mapping | None = None,
        val_ood: Sequence[Features | Mapping] = (),
        ood_names: Sequence[str] | None = None,
        batch_size: int = 1024,
        cache_dir: str | None = None,
        num_workers: int = 0,
        val_max_items: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_features = load_features(train, cache_dir)
        self.val_id = None if val_id is None else load_features(val_id, cache_dir)
        self.val_ood = [load_features(v, cache_dir) for v in val_ood]
        names = (
            list(ood_names)
            if ood_names is not None
            else [v["dataset"] if isinstance(v, Mapping) else f"ood{i + 1}" for i, v in enumerate(val_ood)]
        )
        if len(names) != len(self.val_ood):
            raise ValueError(f"{len(names)} ood_names for {len(self.val_ood)} OOD feature sets")
        id_name = val_id["dataset"] if isinstance(val_id, Mapping) else "test"
        #: one EvalSplit per evaluation loader (validation and test alike): the ID test set, then each OOD set
        self.test_splits = [EvalSplit(id_name, "id"), *(EvalSplit(n, "ood") for n in names)]
        self.val_splits = self.test_splits
        self.pooling, self.batch_size, self.num_workers = pooling, batch_size, num_workers
        self.val_max_items, self.seed = val_max_items, seed

    def train_dataloader(self) -> DataLoader:
        ds = PooledDataset(self.train_features, self.pooling)
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(ds) >= self.batch_size,
            collate_fn=_identity,
            num_workers=self.num_workers,
            generator=g,
        )

    def _eval_loaders(self, cap: bool):
        if self.val_id is None or not self.val_ood:
            return []
        c = self._cap if cap else (lambda f: f)
        sets = [PooledDataset(c(self.val_id), self.pooling, is_ood=False)]
        sets += [PooledDataset(c(f), self.pooling, is_ood=True) for f in self.val_ood]
        return [DataLoader(s, batch_size=4096, collate_fn=_identity) for s in sets]

    def val_dataloader(self):
        """ID test (dataloader 0) and each OOD set, capped at ``val_max_items`` (HEAT: 40 batches)."""
        return self._eval_loaders(cap=True)

    def test_dataloader(self):
        """ID test (dataloader 0) and each OOD set, in full."""
        return self._eval_loaders(cap=False)

    def _cap(self, f: Features) -> Features:
        # HEAT evaluates on the first 40 batches of each OOD set during training (eval_max_iter); we cap by items
        return (
            f if self.val_max_items is None or len(f) <= self.val_max_items else f.subset(slice(0, self.val_max_items))
        )
