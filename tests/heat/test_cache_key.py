"""The HEAT feature cache key is computed from what determines the features: the instantiated transform's parameters,
the backbone weights (file content or in-memory state) and the layer. Changing any of them never reuses stale
features."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

import common.config.resolvers  # noqa: F401
from heat.backbones import create_classifier
from heat.cache import cache_key, extract_features, load_cached, transform_fingerprint, weights_fingerprint
from heat.datamodule import load_features
from tests.heat.test_configs_eval import CONFIG_DIR

SPEC = dict(backbone="resnet18-cifar", dataset="toy", split="train")


def _spec(cfg, name="train") -> dict:
    return OmegaConf.to_container(cfg.data[name], resolve=True)


@pytest.fixture()
def cfg(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["experiment=heat/cifar10_gmm", f"paths.cache_dir={tmp_path}"])
    (tmp_path / "w.ckpt").write_bytes(b"some weights")
    cfg.extract.backbone.checkpoint = str(tmp_path / "w.ckpt")
    return cfg


def test_changing_the_transform_mean_in_the_config_changes_the_key(cfg):
    before = cache_key(**_spec(cfg))
    assert cache_key(**_spec(cfg, "val_id")) != before  # another split
    cfg.extract.transform.mean = [0.5, 0.5, 0.5]
    after = cache_key(**_spec(cfg))
    assert after != before
    # the data specs follow extract.transform, so every set of the row moves to the new key
    assert "0.5, 0.5, 0.5" in transform_fingerprint(_spec(cfg)["transform"])
    cfg.extract.transform.mean = [0.4914, 0.4822, 0.4465]
    assert cache_key(**_spec(cfg)) == before


def test_transform_config_and_instance_give_the_same_key(cfg):
    spec = _spec(cfg)
    from hydra.utils import instantiate

    instance = instantiate(spec["transform"])
    assert isinstance(instance, T.Compose)
    assert cache_key(**{**spec, "transform": instance}) == cache_key(**spec)


def test_weights_enter_by_content_not_folder(tmp_path):
    a, b, c = tmp_path / "a" / "w.ckpt", tmp_path / "b" / "w.ckpt", tmp_path / "c" / "w.ckpt"
    for path, data in ((a, b"0123"), (b, b"0123"), (c, b"0124")):  # c: same name and size, other content
        path.parent.mkdir()
        path.write_bytes(data)
    key = {p: cache_key(**SPEC, checkpoint=str(p), transform="none") for p in (a, b, c)}
    assert key[a] == key[b] != key[c]
    assert weights_fingerprint(str(c))["bytes"] == 4
    assert cache_key(**SPEC, checkpoint=None, transform="none") != key[a]
    with pytest.raises(FileNotFoundError, match="make weights-heat"):
        cache_key(**SPEC, checkpoint=str(tmp_path / "missing.ckpt"), transform="none")


def test_in_memory_weights_and_layer_enter_the_key():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    k0 = cache_key(**SPEC, checkpoint=net, transform="none")
    assert cache_key(**SPEC, checkpoint=net, transform="none", layer="stage3") != k0
    with torch.no_grad():
        net.weight[0, 0] += 1.0
    assert cache_key(**SPEC, checkpoint=net, transform="none") != k0


def test_unstable_repr_is_refused():
    with pytest.raises(ValueError, match="memory address"):
        transform_fingerprint(lambda x: x)


def test_a_changed_transform_never_reads_stale_features(tmp_path):
    """Features cached under one normalisation are not found under another; under the same one they are."""
    torch.manual_seed(0)
    model = create_classifier("resnet18", num_classes=3, cifar_stem=True)
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4) % 3
    old = T.Compose([T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])])
    new = T.Compose([T.Normalize([0.4, 0.5, 0.5], [0.25, 0.25, 0.25])])
    loader = DataLoader(TensorDataset(old(x), y), batch_size=2)
    spec = dict(**SPEC, checkpoint=None)
    extract_features(model, loader, cache_dir=tmp_path, transform=old, **spec)
    assert load_cached(tmp_path, dataset="toy", split="train", key=cache_key(**spec, transform=old)) is not None
    assert load_features({**spec, "transform": old}, str(tmp_path)).avg.shape == (4, 512)
    with pytest.raises(FileNotFoundError, match="no usable cached features"):
        load_features({**spec, "transform": new}, str(tmp_path))
