"""timm backbones, weight files, the retrieval head and BatchNorm freezing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from common.backbones.head import RetrievalHead, RetrievalNet
from common.backbones.timm_backbone import TimmBackbone, WeightsNotFoundError, create_timm_model


@pytest.mark.parametrize("name,kw", [("test_resnet", {}), ("test_vit", {"img_size": 32})])
def test_tiny_timm_embeddings(name, kw):
    net = RetrievalNet(TimmBackbone(name, **kw), embed_dim=16)
    z = net(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_head_pooling_and_layernorm():
    x = torch.randn(2, 4, 3, 3)
    avg = RetrievalHead(4, embed_dim=None, pooling="avg", normalize=False)
    mx = RetrievalHead(4, embed_dim=None, pooling="max", normalize=False)
    torch.testing.assert_close(avg(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(mx(x), x.flatten(2).max(dim=2).values)
    ln = RetrievalHead(4, embed_dim=3, layer_norm=True)
    ref = torch.nn.functional.normalize(ln.fc(torch.nn.functional.layer_norm(x.mean(dim=(2, 3)), (4,))), dim=1)
    torch.testing.assert_close(ln(x), ref)
    with pytest.raises(ValueError, match="pooling"):
        RetrievalHead(4, pooling="gem")
    with pytest.raises(ValueError, match="expects"):
        avg(torch.randn(2, 4, 3))


def test_weights_from_file_and_missing_file(tmp_path):
    src = create_timm_model("test_resnet")
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_timm_model("test_resnet", weights=str(path))
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsNotFoundError, match="make weights-timm NAME=test_resnet"):
        create_timm_model("test_resnet", weights=str(tmp_path / "missing.safetensors"))


def test_freeze_bn_keeps_running_stats():
    net = RetrievalNet(TimmBackbone("test_resnet"), embed_dim=8, freeze_bn=True)
    net.train()
    bn = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, bn.running_mean) and not bn.training
    assert not bn.weight.requires_grad
    free = RetrievalNet(TimmBackbone("test_resnet"), embed_dim=8).train()
    bn2 = next(m for m in free.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before2 = bn2.running_mean.clone()
    free(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert not torch.equal(before2, bn2.running_mean)


def test_transforms_resolved_from_timm_pretrained_config():
    from common.data.transforms import timm_transforms

    t = timm_transforms("resnet50", train=False)
    from PIL import Image

    x = t(Image.new("RGB", (300, 260)))
    assert x.shape == (3, 224, 224)
    norm = t.transforms[-1]
    torch.testing.assert_close(norm.mean, torch.tensor([0.485, 0.456, 0.406]))
    vit = timm_transforms("test_vit", train=False)
    assert vit(Image.new("RGB", (300, 260))).shape == (3, 160, 160)  # test_vit's pretrained cfg: 160 px, mean 0.5
