"""Every checkpoint records its module class; every load refuses a checkpoint of another kind of module (naming both)
or one whose trainable tensors do not match, including for modules that load non-strictly (GalLoP)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from common.launch import run
from common.models.checkpoint_identity import (
    MODULE_CLASS_KEY,
    CheckpointIdentityMixin,
    CheckpointMismatchError,
    check_checkpoint_identity,
)
from tests.conftest import compose_train


class _Strict(CheckpointIdentityMixin, L.LightningModule):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, width)


class _Loose(CheckpointIdentityMixin, L.LightningModule):
    """Saves and loads only its trainable tensors, like GalLoP."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)
        self.prompt = torch.nn.Parameter(torch.zeros(4))
        self.strict_loading = False


def _checkpoint(module: L.LightningModule) -> dict:
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    return ckpt


def test_checkpoint_records_the_module_class():
    assert _checkpoint(_Strict())[MODULE_CLASS_KEY] == f"{__name__}._Strict"


def test_foreign_checkpoint_refused_naming_both_classes():
    ckpt = _checkpoint(_Strict())
    with pytest.raises(CheckpointMismatchError) as e:
        _Loose().on_load_checkpoint(ckpt)
    assert f"{__name__}._Strict" in str(e.value) and f"{__name__}._Loose" in str(e.value)
    _Strict().on_load_checkpoint(ckpt)  # its own kind loads


def test_trainable_tensors_checked_strictly_for_non_strict_modules():
    loose = _Loose()
    own = _checkpoint(loose)
    own["state_dict"] = {"prompt": own["state_dict"]["prompt"]}  # what GalLoP saves: trainable tensors only
    loose.on_load_checkpoint(own)
    legacy = {"state_dict": {"layer.weight": torch.zeros(3, 2)}}  # no class recorded, nothing of ours in it
    with pytest.raises(CheckpointMismatchError, match=r"missing \(prompt\).*not in"):
        check_checkpoint_identity(loose, legacy, "old.ckpt")
    with pytest.raises(CheckpointMismatchError, match="1 trainable tensors .* missing"):
        loose.on_load_checkpoint({"state_dict": {}, MODULE_CLASS_KEY: own[MODULE_CLASS_KEY]})


def test_every_method_module_records_its_class():
    from common.models.retrieval_module import RetrievalModule
    from gallop.module import GalLoPModule
    from heat.classifier import ImageClassifier
    from heat.module import HEATModule

    for cls in (RetrievalModule, HEATModule, GalLoPModule, ImageClassifier):
        assert issubclass(cls, CheckpointIdentityMixin), cls


def test_roadmap_checkpoint_given_to_gallop_is_refused(tmp_path, tiny_fmnist):
    """The probe: a retrieval (ROADMAP-style) checkpoint passed to a GalLoP evaluation used to load nothing and
    report the accuracy of an untrained model."""
    cfg = compose_train(["data=synthetic", "logger=csv", "trainer.max_epochs=1", "test=false"], tmp_path / "retrieval")
    with open_dict(cfg):
        cfg.model.net.backbone.in_chans = 3
        cfg.model.net.embed_dim = 16
        cfg.trainer.limit_train_batches = 1
        del cfg.callbacks.rich_progress_bar
    run(cfg)
    ckpt = tmp_path / "retrieval" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)[MODULE_CLASS_KEY] == "common.models.retrieval_module.RetrievalModule"

    cfg = compose_train(
        [
            "experiment=gallop/fmnist_tiny",
            f"paths.data_dir={tiny_fmnist}",
            "logger=csv",
            "train=false",
            f"ckpt_path={ckpt}",
        ],
        tmp_path / "gallop",
    )
    with open_dict(cfg):
        cfg.data.shots = 2
        cfg.data.test_dataset.subset = 3
        del cfg.callbacks.rich_progress_bar
    with pytest.raises(CheckpointMismatchError) as e:
        run(cfg)
    msg = str(e.value)
    assert "common.models.retrieval_module.RetrievalModule" in msg and "gallop.module.GalLoPModule" in msg
    assert str(ckpt) in msg
    assert not (tmp_path / "gallop" / "metrics.json").exists()
    assert (tmp_path / "gallop" / "status.json").read_text().count('"failed"') >= 1
