"""A HEAT checkpoint rebuilds its module: ``HEATModule.load_from_checkpoint(path)`` with no arguments gives the same
scores (prior and MLP configs are in the hyperparameters, the prior's fit and the MLP weights in the state dict)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import common.config.resolvers  # noqa: F401
from heat.datamodule import FeatureDataModule
from heat.module import HEATModule
from heat.scorers.gaussian import GMM
from tests.heat.helpers import cpu_trainer, make_features, tiny_heat_module
from tests.heat.test_configs_eval import CONFIG_DIR


@pytest.mark.parametrize("row", ["cifar10_gmm", "cifar10_el"])
def test_load_from_checkpoint_alone_gives_the_same_scores(tmp_path, row):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train.yaml",
            overrides=[
                f"experiment=heat/{row}",
                "model.mlp.in_dim=6",
                "model.mlp.hidden=16",
                "model.sgld_steps=2",
                "model.lr=1e-3",
                "+model.prior.reg=1e-4" if row.endswith("gmm") else "model.temperature=1.0",
            ],
        )
    torch.manual_seed(0)
    module = instantiate(cfg.model)  # as the launcher builds it
    assert isinstance(module, HEATModule) and module.hparams.prior["_target_"] == cfg.model.prior._target_
    train, test = make_features(n=64, d=6, c=3), make_features(n=32, seed=1)
    trainer = cpu_trainer(default_root_dir=tmp_path)
    trainer.fit(module, datamodule=FeatureDataModule(train, pooling="avg", batch_size=16))
    ckpt = tmp_path / "heat.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["mlp"]["in_dim"] == 6
    restored = HEATModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert restored.prior.is_fitted and type(restored.prior) is type(module.prior)
    torch.testing.assert_close(restored.score(test), module.score(test))


def test_a_module_built_from_objects_needs_them_to_load(tmp_path):
    train = make_features(n=64, d=6, c=3)
    module = tiny_heat_module(GMM(reg=1e-4).fit(train))
    trainer = cpu_trainer(default_root_dir=tmp_path, max_steps=1)
    trainer.fit(module, datamodule=FeatureDataModule(train, pooling="avg", batch_size=16))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(TypeError, match="prior=..., mlp=..."):
        HEATModule.load_from_checkpoint(tmp_path / "m.ckpt")
