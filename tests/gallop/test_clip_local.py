"""Local features: the last block's value path (ViT) and the attention-pool value path (ModifiedResNet)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gallop.clip_local as cl
from common.backbones.clip import build_clip
from gallop.clip_local import LocalFeatureVisual, block_value_path


@pytest.fixture(scope="module")
def vit():
    model, _ = build_clip("tiny_clip", seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def rn():
    model, _ = build_clip("tiny_clip_rn", seed=0)
    return model.eval()


def _x(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _layer_norm(ln, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def test_value_path_equals_explicit_recomputation_from_block_weights(vit):
    blk = vit.visual.transformer.resblocks[-1]
    x = _x((2, 5, 64))
    w = x.shape[-1]
    wv, bv = blk.attn.in_proj_weight[2 * w :], blk.attn.in_proj_bias[2 * w :]
    h = _layer_norm(blk.ln_1, x)
    v = x + (h @ wv.T + bv) @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
    m = _layer_norm(blk.ln_2, v) @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
    ref = v + _quick_gelu(m) @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    torch.testing.assert_close(block_value_path(blk, x), ref, rtol=1e-5, atol=1e-5)


def test_value_path_is_the_block_with_self_only_attention(vit):
    """Independent check: a block whose attention mask lets each token see only itself gives the value path."""
    blk = vit.visual.transformer.resblocks[-1]
    x = _x((2, 5, 64), seed=1)
    mask = torch.full((5, 5), float("-inf"))
    mask.fill_diagonal_(0.0)
    torch.testing.assert_close(block_value_path(blk, x), blk(x, attn_mask=mask), rtol=1e-5, atol=1e-5)


def test_vit_features_at_init_equal_the_frozen_clip_value_path(vit):
    images = _x((3, 3, 32, 32), seed=2)
    lf = LocalFeatureVisual(vit.visual).eval()
    g, loc = lf(images)
    v = vit.visual
    # frozen CLIP, computed by hand: tokens entering the last block, its value path, ln_post, drop CLS, proj
    x = v.ln_pre(
        torch.cat([v.class_embedding.expand(3, 1, -1), v.conv1(images).flatten(2).transpose(1, 2)], 1)
        + v.positional_embedding
    )
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    ref_local = F.normalize(v.ln_post(block_value_path(v.transformer.resblocks[-1], x))[:, 1:] @ v.proj, dim=-1)
    assert loc.shape == (3, 16, 32)
    torch.testing.assert_close(loc, ref_local, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, F.normalize(vit.encode_image(images), dim=-1), rtol=1e-5, atol=1e-5)
    # identity local_proj == no local_proj
    _, loc_plain = LocalFeatureVisual(vit.visual, learn_local_proj=False)(images)
    torch.testing.assert_close(loc, loc_plain)


def test_local_proj_is_identity_trainable_bias_free_and_changes_features(vit):
    lf = LocalFeatureVisual(vit.visual)
    assert lf.local_proj.bias is None
    assert torch.equal(lf.local_proj.weight, torch.eye(64))
    trainable = {n for n, p in lf.named_parameters() if p.requires_grad}
    assert trainable == {"local_proj.weight"}
    images = _x((2, 3, 32, 32), seed=3)
    g, loc = lf(images)
    loc.sum().backward()
    assert lf.local_proj.weight.grad is not None and lf.local_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        lf.local_proj.weight.mul_(2.0).add_(0.1 * _x((64, 64), seed=4))
    _, loc2 = lf(images)
    assert not torch.allclose(loc, loc2)


def test_value_path_computed_only_in_the_last_block(vit, monkeypatch):
    calls = []
    orig = cl.block_value_path

    def spy(block, x):
        calls.append(block)
        return orig(block, x)

    monkeypatch.setattr(cl, "block_value_path", spy)
    LocalFeatureVisual(vit.visual)(_x((1, 3, 32, 32)))
    assert calls == [vit.visual.transformer.resblocks[-1]]


def test_resnet_local_features_are_the_attnpool_value_path_without_positional_embedding(rn):
    """The original's ResNet local path: v_proj then c_proj on each location of the attention pool's input, with no
    positional embedding (the original's AttentionPool2d applies both linear maps to the permuted feature map before
    it adds the embedding for the pooled query)."""
    images = _x((2, 3, 64, 64), seed=5)
    lf = LocalFeatureVisual(rn.visual).eval()
    g, loc = lf(images)
    v, pool = rn.visual, rn.visual.attnpool
    fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))  # [B, C, 2, 2]
    # location (i, j) is token i * w + j, computed one location at a time from the weights
    ref = torch.empty(2, 4, 32)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                x = fmap[b, :, i, j]
                ref[b, i * 2 + j] = pool.c_proj.weight @ (pool.v_proj.weight @ x + pool.v_proj.bias) + pool.c_proj.bias
    assert loc.shape == (2, 4, 32)
    torch.testing.assert_close(loc, F.normalize(ref, dim=-1), rtol=1e-5, atol=1e-5)
    with_pos = fmap.flatten(2).transpose(1, 2) + pool.positional_embedding[1:]
    wrong = F.normalize(pool.c_proj(pool.v_proj(with_pos)), dim=-1)
    assert not torch.allclose(loc, wrong, atol=1e-3)  # the embedding would move the features
    torch.testing.assert_close(g, F.normalize(rn.encode_image(images), dim=-1), rtol=1e-5, atol=1e-5)
    assert lf.local_proj.weight.shape == (32, 32)


def test_frozen_tower_stays_in_eval_mode(rn):
    lf = LocalFeatureVisual(rn.visual)
    lf.train()
    assert not lf.visual.training
    assert all(not m.training for m in lf.visual.modules())


def test_unsupported_tower_is_rejected():
    with pytest.raises(TypeError, match="ViT or a ModifiedResNet"):
        LocalFeatureVisual(torch.nn.Linear(2, 2))
