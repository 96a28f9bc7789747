"""HEAT refuses distributed runs (trainer=ddp_sim) with an error that names the problem and the fix; one device is
unaffected."""

from __future__ import annotations

import pytest

from heat.datamodule import FeatureDataModule
from heat.mlp import EnergyMLP
from heat.module import DistributedNotSupportedError, HEATModule
from heat.scorers.gaussian import GMM
from tests.conftest import quiet_trainer
from tests.heat.helpers import make_features

FIX = r"trainer=gpu or trainer=cpu \(devices=1\)"


def _module() -> HEATModule:
    return HEATModule(GMM(reg=1e-4), EnergyMLP(6, hidden=8, n_hidden=1), proposal="base_dist", sgld_steps=2, lr=1e-3)


def _trainer(name: str, tmp_path, **kw):
    kw.setdefault("num_sanity_val_steps", 2)  # Lightning's default
    return quiet_trainer(name, tmp_path, **kw)


def _dm() -> FeatureDataModule:
    train = make_features(n=48, d=6, c=3)
    return FeatureDataModule(
        train, val_id=make_features(n=16, seed=1), val_ood=[make_features(n=16, seed=2, shift=3.0)], batch_size=16
    )


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_setup_refuses_a_distributed_trainer_before_fitting_the_prior(tmp_path, stage):
    module = _module()
    module.trainer = _trainer("ddp_sim", tmp_path)  # world_size 2 (not launched)
    with pytest.raises(DistributedNotSupportedError, match=f"world_size=2.*{FIX}"):
        module.setup(stage)
    assert not module.prior.is_fitted  # refused before any work


def test_single_device_trainer_is_accepted(tmp_path):
    module, dm = _module(), _dm()
    module.trainer = _trainer("cpu", tmp_path)
    module.trainer.datamodule = dm  # what trainer.fit sets before setup
    module.setup("fit")
    assert module.prior.is_fitted


@pytest.mark.slow
def test_ddp_sim_fit_fails_in_the_workers_with_the_message(tmp_path):
    """The real launch: both ddp_spawn workers raise in setup (no hang), and the parent re-raises with the text."""
    trainer = _trainer("ddp_sim", tmp_path, num_sanity_val_steps=0)
    with pytest.raises(Exception, match=f"DistributedNotSupportedError.*{FIX}") as info:
        trainer.fit(_module(), datamodule=_dm())
    assert "not sharded" in str(info.value)
