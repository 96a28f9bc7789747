"""GalLoP under DDP (trainer=ddp_sim: 2 gloo processes): the evaluation gathers one score per dataset item in dataset
order (no DistributedSampler padding duplicates), so its metrics equal one process on the same weights; training
refuses unsharded batches and trains on disjoint shards with the distributed sampler."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from common.backbones.clip import create_clip
from common.metrics.ood import ood_metrics
from common.models.distributed import gather_by_index
from gallop.ddp import is_sharded
from gallop.fewshot import FewShotDataModule
from gallop.model import GalLoP
from gallop.module import GalLoPModule
from tests.conftest import quiet_trainer
from tests.gallop.helpers import TensorImages

TOPK = [2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------------------- fast
def test_gather_by_index_drops_padding_and_restores_dataset_order():
    """DistributedSampler(9 items, 2 ranks, shuffle=False): rank 0 gets 0,2,4,6,8, rank 1 gets 1,3,5,7,0 (padding)."""
    values = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])  # per dataset item
    shards = [list(DistributedSampler(range(9), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    index = torch.tensor(shards[0] + shards[1])  # what the rank-order gather gives
    assert index.tolist().count(0) == 2  # the padding duplicate
    naive = values[index]  # the old `all_gather(x).flatten()`
    assert naive.mean() != values.mean()  # the padded item biases the accuracy: 6/10 vs 5/9
    torch.testing.assert_close(gather_by_index(index, naive)[1], values)
    # every rank evaluating the whole (unsharded) set: two copies of everything
    torch.testing.assert_close(gather_by_index(torch.arange(9).repeat(2), values.repeat(2))[1], values)
    with pytest.raises(ValueError, match="3 indices for 2 rows"):
        gather_by_index(torch.arange(3), torch.zeros(2))


def testis_sharded():
    ds = TensorImages(2, 2)
    assert not is_sharded(DataLoader(ds, batch_size=2, shuffle=True))
    assert is_sharded(DataLoader(ds, sampler=DistributedSampler(ds, num_replicas=2, rank=1)))
    rank_aware = SimpleNamespace(world_size=2, __iter__=None)
    assert is_sharded(SimpleNamespace(sampler=None, batch_sampler=rank_aware))


@pytest.fixture(scope="module")
def clip():
    return create_clip("tiny_clip", seed=0)


def test_fit_refuses_unsharded_batches_under_ddp(clip):
    module = GalLoPModule(GalLoP(clip, n_global=2, n_local=2), topk=[2, 3], heatmap_images=0)
    loader = DataLoader(TensorImages(2, 2), batch_size=2, shuffle=True)
    module._trainer = SimpleNamespace(world_size=2, train_dataloader=loader)
    with pytest.raises(RuntimeError, match=r"RandomSampler.*trainer.use_distributed_sampler=true"):
        module.on_train_start()
    module._trainer = SimpleNamespace(world_size=1, train_dataloader=loader)
    module.on_train_start()  # one device: fine


# ---------------------------------------------------------------------------------------------------------- ddp_sim
class _Subset(TensorImages):
    """9 test images of classes {0, 2} (uneven under 2 ranks), labelled in the full class space."""

    def __init__(self) -> None:
        super().__init__(5, 3, seed=5)
        keep = ((self.labels == 0) | (self.labels == 2)).nonzero()[:9, 0]
        self.images, self.labels = self.images[keep], self.labels[keep]
        self.class_subset = [0, 2]


def _dm() -> FewShotDataModule:
    # odd sizes (9 ID, 5 OOD, 9 domain) and eval batches of 2: DistributedSampler pads every test set
    return FewShotDataModule(
        TensorImages(6, 3),
        TensorImages(3, 3, seed=1),
        shots=4,
        batch_size=3,
        eval_batch_size=2,
        ood_datasets={"far": TensorImages(5, 1, seed=2, offset=2.0)},
        domain_datasets={"sub": _Subset()},
    )


class _SeenIndices(L.Callback):
    def __init__(self, out_dir) -> None:
        self.out_dir, self.seen = str(out_dir), []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen += batch["index"].tolist()

    def on_train_end(self, trainer, module):
        torch.save(self.seen, f"{self.out_dir}/seen_rank{trainer.global_rank}.pt")


def _trainer(name: str, tmp_path, **kw) -> L.Trainer:
    return quiet_trainer(name, tmp_path, **kw)


def _test_metrics(trainer: L.Trainer, module: GalLoPModule, dm) -> dict[str, float]:
    trainer.test(module, dm, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


@pytest.mark.slow
def test_ddp_sim_fit_on_shards_and_test_metrics_equal_one_process(clip, tmp_path):
    dm = _dm()
    module = GalLoPModule(GalLoP(clip, n_global=4, n_local=4), optimizer=partial(torch.optim.SGD, lr=0.05), topk=TOPK)
    module.hparams.heatmap_images = 0
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    ddp = _trainer("ddp_sim", tmp_path, use_distributed_sampler=True, callbacks=[_SeenIndices(tmp_path)])
    ddp.fit(module, dm)
    # the weights come back from rank 0 and have moved
    assert all(not torch.equal(p, before[n]) for n, p in module.named_parameters() if p.requires_grad)
    seen = [torch.load(tmp_path / f"seen_rank{r}.pt") for r in range(2)]
    dm.setup()  # (it ran in the workers)
    n_train = len(dm.train_dataset)  # 12 (4 shots x 3 classes): 6 per rank, disjoint
    assert sorted(seen[0] + seen[1]) == list(range(n_train)) and not set(seen[0]) & set(seen[1])

    got = _test_metrics(ddp, module, dm)
    ref = _test_metrics(_trainer("cpu", tmp_path), module, dm)
    assert set(got) == set(ref) and {"test/acc", "test/ood/far/gl_mcm/fpr95_closest", "test/dg/sub/acc"} <= set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    # an independent check of the one-process reference (GL-MCM on the whole ID and OOD sets)
    from gallop.scores import gl_mcm_score

    module.eval()
    with torch.no_grad():
        text = module.net.text_features()
        g, loc = module.net(dm.test_dataset.images, text)
        go, lo = module.net(dm.ood_datasets["far"].images, text)
    expected = ood_metrics(gl_mcm_score(g, loc), gl_mcm_score(go, lo))
    assert ref["test/ood/far/gl_mcm/auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
    assert ref["test/ood/far/gl_mcm/fpr95_closest"] == pytest.approx(expected["fpr95_closest"], abs=1e-6)

    # ddp_sim as configured (use_distributed_sampler=false): every rank tests the whole sets; copies are dropped
    plain = _test_metrics(_trainer("ddp_sim", tmp_path), module, dm)
    for k, v in ref.items():
        assert plain[k] == pytest.approx(v, abs=1e-6), k


@pytest.mark.slow
def test_ddp_sim_fit_without_distributed_sampler_fails_with_the_fix(clip, tmp_path):
    module = GalLoPModule(GalLoP(clip, n_global=2, n_local=2), optimizer=partial(torch.optim.SGD, lr=0.05), topk=[2, 3])
    with pytest.raises(Exception, match="trainer.use_distributed_sampler=true"):
        _trainer("ddp_sim", tmp_path).fit(module, _dm())
