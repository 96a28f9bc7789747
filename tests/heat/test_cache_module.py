import importlib.util
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from heat.backbones import create_classifier, load_classifier_state
from heat.cache import cache_key, cache_paths, extract_features, load_cached
from heat.datamodule import FeatureDataModule
from heat.mlp import EnergyMLP
from heat.module import HEATModule
from heat.scorers.gaussian import GMM
from heat.scorers.logits import EnergyLogits
from tests.heat.helpers import cpu_trainer, make_features, tiny_heat_module


def _tiny_resnet():
    return create_classifier("resnet18", num_classes=5, cifar_stem=True)


def test_extract_features_cache_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = _tiny_resnet()
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    x = torch.randn(10, 3, 16, 16)
    y = torch.arange(10) % 5
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    kw = dict(backbone="resnet18-cifar", checkpoint=None, dataset="toy", split="train", transform="none")
    f = extract_features(model, loader, cache_dir=tmp_path, **kw)
    fmap = model.forward_features(x)
    assert fmap.shape == (10, 512, 2, 2)
    torch.testing.assert_close(f.avg.float(), fmap.mean((2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f.std.float(), fmap.flatten(2).std(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f.max.float(), fmap.amax((2, 3)))
    torch.testing.assert_close(f.logits.float(), model(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f.logits_from(f.avg.float()), model(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(f.labels, y)
    key = cache_key(**kw)
    folder, sidecar = cache_paths(tmp_path, dataset="toy", split="train", key=key)
    meta = json.loads(sidecar.read_text())
    assert meta["complete"] and meta["num_samples"] == 10 and key in sidecar.name
    assert isinstance(np.load(folder / "avg.npy", mmap_mode="r"), np.memmap)
    # a second call reads the cache: the backbone is not run again
    calls = []
    model.forward_features = lambda t: calls.append(1)
    f2 = extract_features(model, loader, cache_dir=tmp_path, **kw)
    assert not calls and torch.equal(f2.avg, f.avg)
    # another transform is another key; an incomplete entry is not used
    assert cache_key(**{**kw, "transform": "flip"}) != key
    meta["complete"] = False
    sidecar.write_text(json.dumps(meta))
    assert load_cached(tmp_path, dataset="toy", split="train", key=key) is None


def test_unlabelled_loader_gives_no_labels(tmp_path):
    model = _tiny_resnet()
    loader = DataLoader(TensorDataset(torch.randn(3, 3, 16, 16)), batch_size=2)
    f = extract_features(
        model,
        loader,
        cache_dir=tmp_path,
        backbone="r",
        checkpoint=None,
        dataset="ood",
        split="test",
        transform="t",
        num_samples=3,
    )
    assert f.labels is None and f.avg.shape == (3, 512)


def test_checkpoint_loading(tmp_path):
    m = _tiny_resnet()
    torch.save({"model_state": m.state_dict()}, tmp_path / "c.ckpt")
    m2 = create_classifier("resnet18", num_classes=5, cifar_stem=True, checkpoint=str(tmp_path / "c.ckpt"))
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier_state(m, tmp_path / "missing.ckpt")


@pytest.mark.parametrize("prior,proposal", [(EnergyLogits, "random_normal"), (GMM, "base_dist")])
def test_heat_module_fast_dev_run_and_checkpoint(tmp_path, prior, proposal):
    torch.manual_seed(0)
    train = make_features(n=64, d=6, c=3)
    test, ood = make_features(n=32, seed=1), make_features(n=32, seed=2, shift=3.0, labels=False)
    p = prior() if prior is EnergyLogits else prior(reg=1e-4)
    module = tiny_heat_module(p, proposal=proposal, proposal_from_batch_labels=True)
    has_metrics = importlib.util.find_spec("common.metrics.ood") is not None  # written by the metrics agent
    val = dict(val_id=test, val_ood=[ood]) if has_metrics else {}
    dm = FeatureDataModule(train, pooling="avg", batch_size=16, **val)
    w0 = [q.clone() for q in module.mlp.parameters()]
    trainer = cpu_trainer(default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert module.prior.is_fitted
    assert any(not torch.equal(a, b) for a, b in zip(w0, module.mlp.parameters()))
    assert ("val/auroc" in trainer.callback_metrics) == has_metrics
    if has_metrics:
        res = trainer.test(module, datamodule=dm, verbose=False)[0]
        from common.metrics.ood import ood_metrics

        expected = ood_metrics(module.score(test).double(), module.score(ood).double())
        assert res["test/ood1/auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
        assert res["test/fpr95_ood_positive"] == pytest.approx(expected["fpr95_ood_positive"], abs=1e-6)
    s = module.score(test)
    assert s.shape == (32,) and torch.isfinite(s).all()
    prior_part, mlp_part = module.energy_parts(test.avg)
    torch.testing.assert_close(s, prior_part + mlp_part)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    p2 = prior() if prior is EnergyLogits else prior(reg=1e-4)
    restored = HEATModule.load_from_checkpoint(ckpt, prior=p2, mlp=EnergyMLP(6, hidden=16, n_hidden=2))
    torch.testing.assert_close(restored.score(test), s)


def test_negatives_have_2b_rows_and_include_proposals():
    train = make_features(n=40, d=5, c=2)
    module = HEATModule(
        GMM(reg=1e-4).fit(train),
        EnergyMLP(5, hidden=8, n_hidden=1),
        proposal="base_dist",
        sgld_steps=2,
        sgld_step_size=1e-3,
        sgld_noise=1e-3,
    )
    real = module.prepare(train.avg[:8])
    neg, z0 = module.negatives(real, train.labels[:8])
    assert neg.shape == (16, 5)
    torch.testing.assert_close(neg[8:], z0)
    torch.testing.assert_close(neg.norm(dim=1), torch.ones(16), atol=1e-5, rtol=0)  # L2 projection


@pytest.mark.slow
def test_backbone_outputs_resnet50():
    from heat.cache import backbone_outputs

    torch.manual_seed(0)
    r50 = create_classifier("resnet50", num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    out = backbone_outputs(r50, x)
    assert out["avg"].shape == (2, 2048) and out["std"].shape == (2, 2048)
    torch.testing.assert_close(out["logits"], r50(x), rtol=1e-4, atol=1e-4)


def test_backbone_outputs_token_model():
    import timm

    from heat.cache import backbone_outputs

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    out = backbone_outputs(vit, x)
    tokens = vit.forward_features(x)
    assert tokens.ndim == 3 and out["avg"].shape == (2, 192) and out["max"].shape == (2, 192)
    torch.testing.assert_close(out["avg"], vit.forward_head(tokens, pre_logits=True))
    torch.testing.assert_close(out["std"], tokens.std(1))
    torch.testing.assert_close(out["logits"], vit(x))
