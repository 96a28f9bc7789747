"""Few-shot sampling (CoOp exact-K, GalLoP stratified), frozen split files, and the few-shot DataModule.

Sampling rules (``sampling=``):

- ``coop_exact_k`` (default; CoOp/Dassl ``generate_fewshot_dataset``): exactly ``K`` items per class, drawn
  without replacement with ``random.Random(seed)``, classes in increasing id order; a class with fewer than ``K``
  items keeps all of them. (Same rule as Dassl; the draws are not bit-identical to Dassl's pkl files, whose RNG state
  depends on everything the run did before.)
- ``gallop_stratified`` (GalLoP's rule, ``create_few_shots_dataset``): ``StratifiedShuffleSplit(train_size=K*C,
  random_state=seed)`` on the whole train list: proportional to class size, so some classes may get 0 items.
- ``gallop_parity`` (the original's exact subsets; use it with seed 1, the only seed the original ran): the same split
  on the labels the original code sees. It renumbers the classes of the split-file datasets by order of first
  appearance in the train list; sklearn allocates and draws class by class in label order, so the renumbering
  changes which items are chosen. With ``relabel_first_appearance=False`` (FGVC-Aircraft, whose original ids are
  ``variants.txt`` order, as ours) it equals ``gallop_stratified``. Only the sampling uses the renumbered ids; the
  datasets keep CoOp's ids (same classes, same accuracies).

The chosen indices are written once to ``{split_dir}/shot_{K}-seed_{seed}-{sampling}.json`` (with the train-set size
and a label checksum) and read back on later runs, so the seed selects the few-shot subset and it never drifts. A
file that cannot be read (not JSON, indices that are not distinct ints of the train set) is resampled with a warning;
the draw is a function of the labels and the seed, so the result is the subset the file was written for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.global_batch import local_batch_size, trainer_world
from common.data.splits import EvalSplit

SAMPLINGS = ("coop_exact_k", "gallop_stratified", "gallop_parity")
log = logging.getLogger(__name__)


def _labels_np(labels) -> np.ndarray:
    y = np.asarray(torch.as_tensor(labels).cpu())
    if y.ndim == 2:
        y = y[:, 0]
    return y.astype(np.int64)


def coop_exact_k(labels, shots: int, seed: int) -> np.ndarray:
    """Exactly ``shots`` indices per class (all of a class when it has fewer), sorted. See the module docstring."""
    y = _labels_np(labels)
    rng = random.Random(seed)
    out: list[int] = []
    for c in np.unique(y):
        items = np.flatnonzero(y == c).tolist()
        out.extend(rng.sample(items, shots) if len(items) >= shots else items)
    return np.sort(np.asarray(out, dtype=np.int64))


def gallop_stratified(labels, shots: int, seed: int) -> np.ndarray:
    """GalLoP's proportional sampler: ``StratifiedShuffleSplit(train_size=shots * C, random_state=seed)``, sorted."""
    from sklearn.model_selection import StratifiedShuffleSplit

    y = _labels_np(labels)
    n_classes = len(np.unique(y))
    size = shots * n_classes
    if size >= len(y):
        return np.arange(len(y), dtype=np.int64)
    split = StratifiedShuffleSplit(n_splits=1, train_size=size, random_state=seed)
    idx, _ = next(split.split(np.zeros(len(y)), y))
    return np.sort(idx.astype(np.int64))


def first_appearance_labels(labels) -> np.ndarray:
    """Class ids renumbered ``0, 1, ...`` by order of first appearance in ``labels`` (the original GalLoP's rule for
    its split-file datasets: ``all_names`` in order of appearance, ``name_to_idx``)."""
    y = _labels_np(labels)
    order: dict[int, int] = {}
    for c in y.tolist():
        order.setdefault(c, len(order))
    return np.asarray([order[c] for c in y.tolist()], dtype=np.int64)


def sample_few_shot(
    labels, shots: int, seed: int, sampling: str = "coop_exact_k", relabel_first_appearance: bool = True
) -> np.ndarray:
    """Indices of the few-shot subset (sorted); ``relabel_first_appearance`` matters for ``gallop_parity`` only."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if sampling == "coop_exact_k":
        return coop_exact_k(labels, shots, seed)
    if sampling == "gallop_stratified":
        return gallop_stratified(labels, shots, seed)
    if sampling == "gallop_parity":
        y = first_appearance_labels(labels) if relabel_first_appearance else labels
        return gallop_stratified(y, shots, seed)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def _checksum(y: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(y).tobytes()).hexdigest()[:16]


def split_file(split_dir: str | Path, shots: int, seed: int, sampling: str) -> Path:
    return Path(split_dir) / f"shot_{shots}-seed_{seed}-{sampling}.json"


def _read_split_file(path: Path, y: np.ndarray) -> np.ndarray | None:
    """The indices of the split file, None (with a warning) when it is unreadable, or a ``ValueError`` when it was
    written for another train set."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        log.warning("few-shot split file %s is unreadable (%s: %s): resampling it", path, type(e).__name__, e)
        return None
    if data.get("n_train") != len(y) or data.get("labels_sha1") != _checksum(y):
        raise ValueError(
            f"few-shot split file '{path}' was written for another train set ({data.get('n_train')} items, "
            f"checksum {data.get('labels_sha1')}; now {len(y)} items, {_checksum(y)}). Point `split_dir` at a "
            f"folder for this dataset, or delete the file to resample."
        )
    idx = data.get("indices")
    if not (isinstance(idx, list) and all(type(i) is int and 0 <= i < len(y) for i in idx)) or len(set(idx)) < len(idx):
        log.warning("few-shot split file %s: 'indices' are not distinct ints in 0..%d: resampling it", path, len(y) - 1)
        return None
    return np.asarray(idx, dtype=np.int64)


def load_or_create_split(
    labels,
    shots: int,
    seed: int,
    sampling: str,
    split_dir: str | Path | None,
    relabel_first_appearance: bool = True,
) -> np.ndarray:
    """Indices of the few-shot subset; read from the split file when it exists, else sampled and written there."""
    y = _labels_np(labels)
    if split_dir is None:
        return sample_few_shot(y, shots, seed, sampling, relabel_first_appearance)
    path = split_file(split_dir, shots, seed, sampling)
    idx = _read_split_file(path, y) if path.is_file() else None
    if idx is not None:
        return idx
    idx = sample_few_shot(y, shots, seed, sampling, relabel_first_appearance)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"shots": shots, "seed": seed, "sampling": sampling, "n_train": len(y), "labels_sha1": _checksum(y)}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({**payload, "indices": idx.tolist()}))
    os.replace(tmp, path)  # a crash mid-write never leaves half a file
    return idx


class RemapClasses(Dataset):
    """Keep the items of ``class_ids`` and relabel them ``0..len(class_ids)-1`` (in the order given).

    Used to hold classes out (as near-OOD) of a labelled dataset. ``labels`` ``[N]`` (or column 0 of ``[N, L]``).
    """

    def __init__(self, dataset: Dataset, class_ids: Sequence[int]) -> None:
        y = _labels_np(dataset.labels)
        self.dataset = dataset
        self.class_ids = [int(c) for c in class_ids]
        lut = {c: i for i, c in enumerate(self.class_ids)}
        self.indices = np.flatnonzero(np.isin(y, self.class_ids))
        self.labels = torch.as_tensor([lut[int(c)] for c in y[self.indices]], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[int(self.indices[i])])
        item["label"] = self.labels[i]
        item["index"] = i
        return item


class LabelledSubset(Dataset):
    """The items ``indices`` of ``dataset``, with ``labels`` sliced accordingly; ``index`` is the position here."""

    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.labels = torch.as_tensor(dataset.labels)[torch.as_tensor(self.indices, dtype=torch.long)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[self.indices[i]])
        item["index"] = i
        return item


class FewShotDataModule(L.LightningDataModule):
    """K-shot training set, and test loaders for ID test, OOD sets and domain-shifted sets.

    Args:
        train_dataset / test_dataset: datasets with ``labels`` (int64 ``[N]``), items ``{"image", "label", "index"}``.
        class_names: class names in label order (default: ``train_dataset.class_names``).
        shots / seed / sampling / split_dir: see the module docstring (``split_dir=None``: resample every run).
        val_dataset: optional; GalLoP and CoOp report the last epoch, so it is only logged.
        ood_datasets: ``{name: dataset}`` OOD sets (labels ignored).
        domain_datasets: ``{name: dataset}`` domain-shifted sets labelled in the same class space; a dataset may
            carry ``class_subset`` (sorted class ids it covers, ImageNet-A/R's 200), scored on those classes only.
        class_ids: keep and relabel only these classes in train/val/test (held-out classes as near-OOD).
        relabel_first_appearance: ``gallop_parity`` only (module docstring); False for FGVC-Aircraft.
        drop_last: drop the last partial training batch (the original GalLoP does; the paper rows set it). A train
            set smaller than one batch is then an error, not an epoch without a step.
        global_batch: ``batch_size`` is the batch of all DDP ranks together; each rank loads ``batch_size /
            world_size`` (:mod:`common.data.global_batch`; a size the world size does not divide is refused at setup).

    Test dataloaders are ``[test, *ood, *domains]``; :attr:`test_splits` describes them
    (:class:`common.data.splits.EvalSplit`: ``test`` of kind ``id``, then each OOD set by its name and kind ``ood``,
    then each domain-shifted set with kind ``domain``). :attr:`val_splits` is ``[val]`` (kind ``id``).
    """

    def __init__(
        self,
        train_dataset: Dataset,
        test_dataset: Dataset,
        class_names: Sequence[str] | None = None,
        shots: int = 16,
        seed: int = 1,
        sampling: str = "coop_exact_k",
        split_dir: str | None = None,
        val_dataset: Dataset | None = None,
        ood_datasets: dict[str, Dataset] | None = None,
        domain_datasets: dict[str, Dataset] | None = None,
        class_ids: Sequence[int] | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 100,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        relabel_first_appearance: bool = True,
        global_batch: bool = False,
    ) -> None:
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        names = list(class_names) if class_names is not None else list(getattr(train_dataset, "class_names", []))
        if class_ids is not None:
            train_dataset, test_dataset = RemapClasses(train_dataset, class_ids), RemapClasses(test_dataset, class_ids)
            val_dataset = RemapClasses(val_dataset, class_ids) if val_dataset is not None else None
            if names and len(names) != len(class_ids):
                names = [names[c] for c in class_ids]
        if not names:
            raise ValueError("class_names are needed (pass class_names=..., or a train_dataset with .class_names)")
        n_classes = int(_labels_np(train_dataset.labels).max()) + 1
        if len(names) < n_classes:
            raise ValueError(f"{len(names)} class names for labels up to {n_classes - 1}")
        self.class_names = names
        self.full_train, self.test_dataset, self.val_dataset = train_dataset, test_dataset, val_dataset
        self.ood_datasets = dict(ood_datasets or {})
        self.domain_datasets = dict(domain_datasets or {})
        self.shots, self.seed, self.sampling, self.split_dir = shots, seed, sampling, split_dir
        self.relabel_first_appearance = relabel_first_appearance
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory, self.drop_last = num_workers, pin_memory, drop_last
        self.global_batch = global_batch  # batch_size is the batch of all DDP ranks (common.data.global_batch)
        self.train_dataset: Dataset | None = None
        self.test_splits = [
            EvalSplit("test", "id"),
            *(EvalSplit(n, "ood") for n in self.ood_datasets),
            *(EvalSplit(n, "domain") for n in self.domain_datasets),
        ]
        self.val_splits = [EvalSplit("val", "id")]

    def setup(self, stage: str | None = None) -> None:
        """Sample the few-shot train set (for ``fit``, or when called without a stage); a test-only run never does."""
        self.train_batch_size()  # refuses a global batch that the world size does not divide
        if self.train_dataset is None and stage in (None, "fit"):
            idx = load_or_create_split(
                self.full_train.labels,
                self.shots,
                self.seed,
                self.sampling,
                self.split_dir,
                self.relabel_first_appearance,
            )
            self.train_dataset = LabelledSubset(self.full_train, idx)

    def record_protocol(self) -> dict[str, str]:
        """What the result record notes about this data (``common.callbacks.result_record``): the few-shot sampling,
        when a few-shot train set was drawn (a test-only run, zero-shot CLIP, has none)."""
        return {"sampling": self.sampling} if self.train_dataset is not None else {}

    def train_batch_size(self) -> int:
        """Train items per rank: ``batch_size``, or ``batch_size / world_size`` with ``global_batch``."""
        return local_batch_size(self.batch_size, trainer_world(self)[1], self.global_batch)

    def _loader(self, ds: Dataset, train: bool = False) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.train_batch_size() if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self.drop_last and len(self.train_dataset) < self.batch_size:
            raise ValueError(
                f"the few-shot train set has {len(self.train_dataset)} items, fewer than one batch of "
                f"{self.batch_size}, and drop_last=True would train on nothing: lower data.batch_size or set "
                f"data.drop_last=false"
            )
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self):
        return self._loader(self.val_dataset) if self.val_dataset is not None else []

    def test_datasets(self) -> list[Dataset]:
        return [self.test_dataset, *self.ood_datasets.values(), *self.domain_datasets.values()]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds) for ds in self.test_datasets()]
