"""HEAT stops on a non-finite loss (the retrieval module's guard, common.models.nonfinite), or skips with a count."""

from __future__ import annotations

import pytest
import torch

from common.models.nonfinite import NonFiniteLossError
from heat.datamodule import FeatureDataModule
from heat.mlp import EnergyMLP
from heat.module import HEATModule
from heat.scorers.gaussian import GMM
from tests.heat.helpers import cpu_trainer, make_features, tiny_heat_module


def _fit(policy: str, lr: float) -> HEATModule:
    torch.manual_seed(0)
    module = tiny_heat_module(GMM(reg=1e-4), proposal="base_dist", lr=lr, nan_policy=policy)
    trainer = cpu_trainer(limit_train_batches=4, enable_checkpointing=False)
    trainer.fit(module, datamodule=FeatureDataModule(make_features(n=64, d=6, c=3), pooling="avg", batch_size=16))
    return module


def test_huge_lr_stops_on_the_first_non_finite_loss():
    """lr 1e12: the first Adam step blows the MLP up, the second loss is NaN and the run stops there, naming it."""
    with pytest.raises(NonFiniteLossError, match=r"global step 1, batch 1.*'cd': nan.*nan_policy=skip"):
        _fit("raise", lr=1e12)


def test_skip_policy_counts_the_skipped_batches():
    module = _fit("skip", lr=1e12)
    assert module.skipped_batches == 3  # batches 1..3 of 4: every batch after the blown-up first step
    assert _fit("skip", lr=1e-3).skipped_batches == 0


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="nan_policy must be 'raise' or 'skip'"):
        HEATModule(GMM(), EnergyMLP(6, hidden=8, n_hidden=1), nan_policy="ignore")
