"""GalLoP's training step uses the shared non-finite loss guard (common.models.nonfinite): stop or skip and count."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from common.backbones.clip import create_clip
from common.models.nonfinite import NonFiniteLossError
from gallop.model import GalLoP
from gallop.module import GalLoPModule
from tests.gallop.helpers import TensorImages
from tests.gallop.test_module import _dm, _trainer


@pytest.fixture(scope="module")
def clip():
    return create_clip("tiny_clip", seed=0)


def _fit(clip, policy: str, lr: float) -> GalLoPModule:
    torch.manual_seed(0)
    module = GalLoPModule(
        GalLoP(clip, n_global=2, n_local=2),
        optimizer=partial(torch.optim.SGD, lr=lr),
        topk=[2, 3],
        heatmap_images=0,
        nan_policy=policy,
        class_names=TensorImages(1, 3).class_names,
    )
    _trainer(limit_train_batches=3, limit_val_batches=0).fit(module, datamodule=_dm())
    return module


def test_a_nan_loss_stops_with_its_parts_named(clip):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 0, global step 1, batch 1.*loss_global"):
        _fit(clip, "raise", lr=1e30)


def test_skip_policy_counts_and_a_sane_lr_skips_nothing(clip):
    assert _fit(clip, "skip", lr=1e30).skipped_batches == 2
    assert _fit(clip, "skip", lr=1e-3).skipped_batches == 0
    with pytest.raises(ValueError, match="nan_policy must be"):
        GalLoPModule(GalLoP(clip, n_global=2, n_local=2), nan_policy="ignore")
