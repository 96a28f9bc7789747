"""``data.global_batch``: under DDP ``batch_size`` is the batch of all ranks together (the original codes'
DataParallel batch). Unit tests with a faked world size, one real 2-process (gloo) fit, and the configs."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from common.data.datamodule import RetrievalDataModule
from common.data.global_batch import RankSliceBatchSampler, local_batch_size
from common.data.sampler_hierarchical import HierarchicalBatchSampler
from common.data.sampler_multilabel import MultiLabelMPerClassSampler
from common.data.sampler_sliding_window import SlidingWindowMPerClassSampler
from common.data.samplers import MPerClassBatchSampler

ROOT = Path(__file__).resolve().parents[2]


class _Items(torch.utils.data.Dataset):
    """``n_classes`` x ``per_class`` items; labels ``[N, 2]`` = [class, class // 4] (a 2-level hierarchy)."""

    def __init__(self, n_classes: int = 16, per_class: int = 6) -> None:
        fine = torch.arange(n_classes).repeat_interleave(per_class)
        self.labels = torch.stack([fine, fine // 4], dim=1)
        self.x = torch.randn(len(fine), 3, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.labels[i], "index": i}


SAMPLERS = {
    "random": None,
    "m_per_class": functools.partial(MPerClassBatchSampler, m=4),
    "sliding_window": functools.partial(SlidingWindowMPerClassSampler, m=4),
    "hierarchical": functools.partial(HierarchicalBatchSampler, m=4, batches_per_super_tuple=2),
}


def _datamodule(sampler, batch_size=16, global_batch=True, world=1, rank=0) -> RetrievalDataModule:
    ds = _Items()
    dm = RetrievalDataModule(ds, ds, batch_size=batch_size, sampler=sampler, seed=3, global_batch=global_batch)
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, current_epoch=0)  # a faked DDP position
    return dm


def _indices(loader) -> list[list[int]]:
    return [batch["index"].tolist() for batch in loader]


# ---------------------------------------------------------------------------------------------------- the rule
def test_local_batch_size_rule():
    assert local_batch_size(128, 1, True) == 128
    assert local_batch_size(128, 4, False) == 128  # per-rank semantics: unchanged
    assert local_batch_size(128, 4, True) == 32
    assert local_batch_size(384, 3, True, m=4) == 128  # ROADMAP iNat: 384 over the original's 3 GPUs
    with pytest.raises(ValueError, match=r"divisible by the world size 3.*e\.g\. 129 or 126\).*global_batch=false"):
        local_batch_size(128, 3, True)
    with pytest.raises(
        ValueError, match=r"split the m=4 items of a class.*multiple of world_size \* m = 32 \(e\.g\. 64 or 32\)"
    ):
        local_batch_size(48, 8, True, m=4)  # 6 items per rank
    with pytest.raises(ValueError, match=r"multiple of 12 \(e\.g\. 132 or 120\)"):
        local_batch_size(128, 3, True, m=4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        local_batch_size(0, 1, False)


def test_rank_slices_partition_each_global_batch():
    batches = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    slices = [list(RankSliceBatchSampler(batches, r, 3)) for r in range(3)]
    assert slices == [[[0, 1], [6, 7]], [[2, 3], [8, 9]], [[4, 5], [10, 11]]]
    assert len(RankSliceBatchSampler(batches, 0, 3)) == 2
    with pytest.raises(ValueError, match="cannot be split evenly over 4 ranks"):
        list(RankSliceBatchSampler(batches, 0, 4))
    with pytest.raises(ValueError, match="rank must be in"):
        RankSliceBatchSampler(batches, 2, 2)


# ------------------------------------------------------------------------------------- the datamodule, faked world
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_global_batch_of_two_ranks_is_the_single_process_batch(name):
    """Rank slices, put back together in rank order, are the batches that one process draws with the same size."""
    single = _indices(_datamodule(SAMPLERS[name], world=1).train_dataloader())
    ranks = [_indices(_datamodule(SAMPLERS[name], world=2, rank=r).train_dataloader()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) > 1  # the same number of steps per epoch
    for step, global_batch in enumerate(single):
        assert len(global_batch) == 16 and len(ranks[0][step]) == len(ranks[1][step]) == 8
        assert ranks[0][step] + ranks[1][step] == global_batch
    if name != "random":  # each rank holds whole classes (m = 4 items each)
        labels = _Items().labels[:, 0]
        for part in ranks[0] + ranks[1]:
            counts = torch.bincount(labels[torch.tensor(part)])
            assert counts[counts > 0].tolist() == [4, 4]


def _keys(dm: RetrievalDataModule) -> list[list[tuple[int, int]]]:
    """The ``(index, augmentation seed)`` pairs of each batch of the train loader."""
    return list(dm.train_dataloader().batch_sampler)


@pytest.mark.parametrize("name", ["random", "hierarchical"])
def test_items_get_the_augmentation_seed_of_one_process_and_no_two_ranks_share_one(name):
    single = _keys(_datamodule(SAMPLERS[name], world=1))
    # global batch: rank slices put back together carry the single process's (index, seed) pairs
    ranks = [_keys(_datamodule(SAMPLERS[name], world=2, rank=r)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    # per-rank batches: rank r's b-th batch is batch r + 2b of the shared list, with that batch's seeds
    ranks = [_keys(_datamodule(SAMPLERS[name], global_batch=False, world=2, rank=r)) for r in range(2)]
    single = _keys(_datamodule(SAMPLERS[name], global_batch=False, world=1))
    assert ranks[0] == single[0::2][: len(ranks[0])] and ranks[1] == single[1::2][: len(ranks[1])]
    seeds = [[seed for batch in r for _, seed in batch] for r in ranks]
    assert not set(seeds[0]) & set(seeds[1]) and len(set(seeds[0])) == len(seeds[0])


def test_multilabel_sampler_global_batch():
    labels = torch.zeros(64, 8, dtype=torch.bool)
    labels[torch.arange(64), torch.arange(64) % 8] = True
    sampler = functools.partial(MultiLabelMPerClassSampler, m=2)
    ds = _Items(n_classes=8, per_class=8)
    ds.labels = labels

    def batches(world, rank):
        dm = RetrievalDataModule(ds, ds, batch_size=8, sampler=sampler, seed=1, global_batch=True)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, current_epoch=0)
        return _indices(dm.train_dataloader())

    single, r0, r1 = batches(1, 0), batches(2, 0), batches(2, 1)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == single


def test_per_rank_batch_is_unchanged_without_the_switch():
    """global_batch=false: each rank draws its own full batch (every world_size-th of the shared list)."""
    sampler = SAMPLERS["m_per_class"]
    ranks = [_indices(_datamodule(sampler, global_batch=False, world=2, rank=r).train_dataloader()) for r in range(2)]
    single = _indices(_datamodule(sampler, global_batch=False, world=1).train_dataloader())
    assert all(len(b) == 16 for b in ranks[0] + ranks[1])
    assert ranks[0] == single[0::2][: len(ranks[0])] and ranks[1] == single[1::2][: len(ranks[1])]


def test_setup_refuses_a_global_batch_the_world_size_does_not_divide():
    dm = _datamodule(SAMPLERS["m_per_class"], batch_size=16, world=3)
    with pytest.raises(ValueError, match=r"data.batch_size=16 .* divisible by the world size 3"):
        dm.setup("fit")
    dm = _datamodule(SAMPLERS["m_per_class"], batch_size=24, world=3)  # 8 per rank: 2 whole classes of m = 4
    dm.setup("fit")
    with pytest.raises(ValueError, match="split the m=4 items"):
        _datamodule(SAMPLERS["m_per_class"], batch_size=24, world=4).setup("fit")  # 6 per rank
    _datamodule(SAMPLERS["m_per_class"], batch_size=18, global_batch=False, world=4).local_batch_size()  # per rank


def test_fewshot_datamodule_divides_the_batch():
    from gallop.fewshot import FewShotDataModule

    ds = _Items(n_classes=4, per_class=8)
    ds.labels = ds.labels[:, 0]
    dm = FewShotDataModule(ds, ds, class_names=list("abcd"), shots=4, sampling="coop_exact_k", batch_size=8)
    dm.global_batch = True
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2, current_epoch=0)
    assert dm.train_batch_size() == 4 and dm.train_dataloader().batch_size == 4
    dm.trainer = SimpleNamespace(global_rank=0, world_size=3, current_epoch=0)
    with pytest.raises(ValueError, match="divisible by the world size 3"):
        dm.setup("fit")
    dm.global_batch = False
    assert dm.train_batch_size() == 8


# ------------------------------------------------------------------------------------------------------ configs
PAPER_DATA = [
    "sop",
    "cub",
    "inat",
    "inat_full",
    "inshop",
    "dyml_animal",
    "dyml_product",
    "dyml_vehicle",
    "hgldv2",
    "gallop_coop",
    "gallop_imagenet",
]


def test_every_data_config_says_what_batch_size_means():
    for path in sorted((ROOT / "configs" / "data").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("_target_") == "heat.datamodule.FeatureDataModule":
            assert "global_batch" not in cfg  # HEAT runs on one device (heat.module refuses DDP)
            continue
        assert isinstance(cfg.get("global_batch"), bool), f"{path.name}: set global_batch: true or false"
        assert cfg["global_batch"] == (path.stem in PAPER_DATA), path.name


# ------------------------------------------------------------------------------------------ a real 2-process run
class _RecordIndices(L.LightningModule):
    """Records, per step, this rank's batch and the batch gathered from all ranks (in rank order)."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.fc, self.out_dir, self.steps = torch.nn.Linear(3, 2), out_dir, []

    def training_step(self, batch, batch_idx):
        gathered = self.all_gather(batch["index"])  # [world, B_local]
        self.steps.append({"local": batch["index"].tolist(), "global": gathered.reshape(-1).tolist()})
        return self.fc(batch["image"]).pow(2).mean()

    def on_train_end(self) -> None:
        torch.save(self.steps, f"{self.out_dir}/rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_ddp_sim_global_batch_equals_the_configured_size(tmp_path):
    """trainer=ddp_sim (2 gloo processes): every step's gathered batch is one global batch of data.batch_size items,
    the same batches one process draws; a size that 2 does not divide fails in the workers with the fix."""
    from tests.conftest import quiet_trainer

    ds = _Items()
    sampler = SAMPLERS["m_per_class"]
    dm = RetrievalDataModule(ds, ds, batch_size=16, sampler=sampler, seed=3, global_batch=True)
    trainer = quiet_trainer("ddp_sim", tmp_path, max_epochs=1)
    trainer.fit(_RecordIndices(str(tmp_path)), datamodule=dm)
    runs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _indices(_datamodule(sampler, world=1).train_dataloader())
    assert len(runs[0]) == len(runs[1]) == len(single)
    for step, expected in enumerate(single):
        assert len(runs[0][step]["local"]) == len(runs[1][step]["local"]) == 8
        assert runs[0][step]["global"] == runs[1][step]["global"] == expected

    bad = RetrievalDataModule(ds, ds, batch_size=15, sampler=None, seed=3, global_batch=True)
    with pytest.raises(Exception, match="divisible by the world size 2"):
        quiet_trainer("ddp_sim", tmp_path / "bad", max_epochs=1).fit(_RecordIndices(str(tmp_path)), datamodule=bad)


# one row per method and kind of data config (composing every row takes minutes; tests/roadmap/test_configs.py
# composes each ROADMAP row for its own checks)
PAPER_ROWS = [
    "roadmap/inat_resnet50",
    "roadmap/tpami_cub_resnet50_supndcg",
    "happier/dyml_product_happier",
    "gallop/imagenet_16shot",
    "gallop/dtd_16shot",
]


def test_paper_rows_train_with_a_global_batch():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        for row in PAPER_ROWS:
            cfg = compose("train", overrides=[f"experiment={row}"])
            assert cfg.data.global_batch is True, row
