"""A run stopped mid-epoch and resumed from last.ckpt ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from common.launch import run
from tests.conftest import compose_train


def _cfg(out, extra=(), image_size: int = 32):
    """Two epochs of 4 batches on synthetic images, a checkpoint after every step. ``image_size=16`` runs about 4x
    faster (the fast variants of the resume tests)."""
    cfg = compose_train(
        ["data=synthetic", "logger=csv", "trainer.max_epochs=2", "+trainer.enable_progress_bar=false", *extra], out
    )
    with open_dict(cfg):
        cfg.model.net.backbone.in_chans = 3
        cfg.model.net.embed_dim = 16
        cfg.data.train_dataset.size = cfg.data.test_dataset.size = image_size
        cfg.data.batch_size = 16  # 64 items: 4 batches per epoch
        cfg.data.train_dataset.augment_noise = 0.3
        cfg.callbacks.model_checkpoint.every_n_train_steps = 1
        cfg.callbacks.model_checkpoint.every_n_epochs = None
        del cfg.callbacks.rich_progress_bar
    return cfg


def _params(objs):
    return torch.cat([p.detach().flatten() for p in objs["model"].parameters()])


@pytest.mark.slow
@pytest.mark.parametrize(
    "cut,extra",
    [
        (3, []),  # mid epoch 0
        (4, []),  # the last batch of epoch 0
        (6, []),  # mid epoch 1: the resumed loader must be in epoch 1, not replay epoch 0's order
        (3, ["+trainer.limit_train_batches=3"]),  # an epoch ended by limit_train_batches
    ],
)
def test_resume_mid_epoch_matches_uninterrupted(tmp_path, cut, extra):
    full_metrics, full = run(_cfg(tmp_path / "full", extra))
    # stop after `cut` steps, then resume from last.ckpt
    run(_cfg(tmp_path / "cut", [f"+trainer.max_steps={cut}", "test=false", *extra]))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert last.exists()
    resumed_metrics, resumed = run(_cfg(tmp_path / "cut", [f"ckpt_path={last}", *extra]))
    assert resumed["trainer"].global_step == full["trainer"].global_step == (6 if extra else 8)
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=1e-6)
    for key in ("test/map@r", "test/recall@1"):
        assert resumed_metrics[key] == full_metrics[key]


@pytest.mark.slow
def test_resume_needs_the_skip(tmp_path):
    """Control: without skipping the done batches (a non-resumable loader) the resumed weights differ."""
    from common.data.resumable import ResumableDataLoader

    _, full = run(_cfg(tmp_path / "full"))
    run(_cfg(tmp_path / "cut", ["+trainer.max_steps=3", "test=false"]))
    original = ResumableDataLoader.load_state_dict
    ResumableDataLoader.load_state_dict = lambda self, state: None
    try:
        _, resumed = run(_cfg(tmp_path / "cut", [f"ckpt_path={tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'}"]))
    finally:
        ResumableDataLoader.load_state_dict = original
    assert not torch.allclose(_params(resumed), _params(full), atol=1e-6)


class _Indices(L.Callback):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch["index"].tolist())


def test_every_epoch_draws_a_new_order(tmp_path):
    """Lightning advances the loader's epoch (through ``batch_sampler.sampler.set_epoch``): epoch 1 does not replay
    the batches and augmentations of epoch 0."""
    import hydra

    cfg = _cfg(tmp_path, ["test=false", "+trainer.limit_train_batches=2"])
    recorder = _Indices()
    with open_dict(cfg):
        del cfg.callbacks
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[recorder], logger=False, enable_checkpointing=False)
    trainer.fit(hydra.utils.instantiate(cfg.model), datamodule=hydra.utils.instantiate(cfg.data))
    assert len(recorder.seen) == 4
    assert recorder.seen[:2] != recorder.seen[2:]


def test_loader_state_restores_the_epoch():
    from common.data.datasets.synthetic import SyntheticImages
    from common.data.resumable import ResumableDataLoader, SeededBatchSampler, SeededItems
    from common.data.samplers import RandomBatchSampler

    def loader():
        sampler = SeededBatchSampler(RandomBatchSampler(16, 4, seed=3), seed=5)
        return ResumableDataLoader(SeededItems(SyntheticImages(num_classes=4, per_class=4)), batch_sampler=sampler)

    reference = loader()
    reference.batch_sampler.set_epoch(2)
    epoch2 = [b["index"].tolist() for b in reference]
    reference.batch_sampler.set_epoch(3)
    epoch3 = [b["index"].tolist() for b in reference]
    mid = loader()
    mid.load_state_dict({"epoch": 2, "batches_done": 1})  # a fresh process, mid epoch 2
    assert [b["index"].tolist() for b in mid] == epoch2[1:]
    done = loader()
    done.load_state_dict({"epoch": 2, "batches_done": 4})  # saved at the end of epoch 2
    assert [b["index"].tolist() for b in done] == epoch3


def test_seeded_batches_skip_and_item_seeds():
    from common.data.datasets.synthetic import SyntheticImages
    from common.data.resumable import ResumableDataLoader, SeededBatchSampler, SeededItems
    from common.data.samplers import RandomBatchSampler

    ds = SeededItems(SyntheticImages(num_classes=4, per_class=4, augment_noise=1.0))
    sampler = SeededBatchSampler(RandomBatchSampler(16, 4, seed=3), seed=5)
    loader = ResumableDataLoader(ds, batch_sampler=sampler, progress_fn=lambda: 2)
    full = [b["image"] for b in loader]
    assert len(full) == 4
    torch.manual_seed(123)  # the global RNG does not change the items
    again = [b["image"] for b in loader]
    for a, b in zip(full, again):
        assert torch.equal(a, b)
    assert loader.state_dict()["batches_done"] == 2
    loader.load_state_dict({"batches_done": 2})
    tail = [b["image"] for b in loader]
    assert len(tail) == 2 and torch.equal(tail[0], full[2]) and torch.equal(tail[1], full[3])
    assert len([b for b in loader]) == 4  # the skip applies once
    sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["image"], full[0])
    assert ds.labels.shape == (16,)  # attributes forwarded


def test_rng_state_roundtrip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    from common.callbacks.rng_state import RNGStateCallback

    cb = RNGStateCallback()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    state = cb.state_dict()
    torch.save(state, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    cb.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
