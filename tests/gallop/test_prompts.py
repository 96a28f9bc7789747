"""Prompt learners: n_ctx, token layout, equality with plain CLIP text at init, gradients, checkpointing."""

from __future__ import annotations

import open_clip
import pytest
import torch

from common.backbones.clip import build_clip
from gallop.model import CoOp, GalLoP, ZeroShotCLIP, count_trainable
from gallop.prompts import PromptedTextFeatures, PromptLearner, TextEncoder, build_prompt_tokens, format_class_name

NAMES = ["cat", "Apply_Eye_Makeup", "golden retriever"]


@pytest.fixture(scope="module")
def clip():
    model, _ = build_clip("tiny_clip", seed=0)
    return model.eval()


def test_n_ctx_comes_from_the_init_text(clip):
    assert PromptLearner(clip.token_embedding, 4, "a photo of a").n_ctx == 4
    assert PromptLearner(clip.token_embedding, 2, "a photo of a").ctx.shape == (2, 4, 64)
    assert PromptLearner(clip.token_embedding, 1, None, n_ctx=16).ctx.shape == (1, 16, 64)
    with pytest.raises(ValueError, match="n_ctx"):
        PromptLearner(clip.token_embedding, 1, "a photo of a", n_ctx=5)


def test_name_styles():
    assert format_class_name("Apply_Eye_Makeup", "gallop") == "Apply_Eye_Makeup"
    assert format_class_name("Apply_Eye_Makeup", "coop") == "Apply Eye Makeup."
    with pytest.raises(ValueError, match="name_style"):
        format_class_name("x", "clip")


@pytest.mark.parametrize("style", ["gallop", "coop"])
def test_token_layout_matches_tokenising_the_full_sentence(style):
    ctx_ids = open_clip.tokenizer._tokenizer.encode("a photo of a")
    ids = build_prompt_tokens(NAMES, 4, ctx_ids, style)
    ref = open_clip.tokenize([f"a photo of a {format_class_name(n, style)}" for n in NAMES])
    assert torch.equal(ids, ref)
    eot = ids.argmax(-1)
    n_name = torch.tensor([len(open_clip.tokenizer._tokenizer.encode(format_class_name(n, style))) for n in NAMES])
    assert torch.equal(eot, 1 + 4 + n_name)  # EOT shifted by the 4 context tokens


def test_long_names_are_truncated_keeping_eot():
    ids = build_prompt_tokens(["word " * 100], 4, [320, 1125, 539, 320], "gallop")
    assert ids.shape == (1, 77) and ids[0, -1] == 49407 and ids[0, 0] == 49406


@pytest.mark.parametrize("style", ["gallop", "coop"])
def test_prompted_features_at_init_equal_clip_text_features(clip, style):
    enc = TextEncoder(clip)
    feats = PromptedTextFeatures(enc, PromptLearner(clip.token_embedding, 3, "a photo of a"), style)
    feats.set_class_names(NAMES)
    out = feats()
    assert out.shape == (3, 3, 32)  # [K, M, D]
    ref = clip.encode_text(open_clip.tokenize([f"a photo of a {format_class_name(n, style)}" for n in NAMES]), True)
    for m in range(3):
        torch.testing.assert_close(out[:, m], ref, rtol=1e-5, atol=1e-5)


def test_each_prompt_moves_its_own_features_and_gets_gradients(clip):
    learner = PromptLearner(clip.token_embedding, 2, "a photo of a")
    feats = PromptedTextFeatures(TextEncoder(clip), learner, "gallop")
    feats.set_class_names(NAMES)
    with torch.no_grad():
        learner.ctx[1] += 0.5
    out = feats()
    assert not torch.allclose(out[:, 0], out[:, 1])
    out[:, 1].sum().backward()
    assert learner.ctx.grad[0].abs().sum() == 0 and learner.ctx.grad[1].abs().sum() > 0
    assert all(p.grad is None for p in feats.encoder.parameters())


def test_grad_checkpointing_gives_the_same_gradients(clip):
    grads = []
    for ckpt in (False, True):
        learner = PromptLearner(clip.token_embedding, 2, "a photo of a")
        feats = PromptedTextFeatures(TextEncoder(clip, grad_checkpointing=ckpt), learner, "gallop")
        feats.set_class_names(NAMES)
        (feats() * torch.arange(32.0)).sum().backward()
        grads.append(learner.ctx.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_encoding_before_class_names_is_a_clear_error(clip):
    feats = PromptedTextFeatures(TextEncoder(clip), PromptLearner(clip.token_embedding, 1), "gallop")
    with pytest.raises(RuntimeError, match="set_class_names"):
        feats()


def test_gallop_shapes_and_trainable_parameters(clip):
    model = GalLoP(clip, n_global=4, n_local=4)
    model.set_class_names(NAMES)
    g, loc = model(torch.randn(2, 3, 32, 32))
    assert g.shape == (2, 3, 4) and loc.shape == (2, 16, 3, 4)
    assert count_trainable(model) == 2 * 4 * 4 * 64 + 64 * 64
    assert count_trainable(CoOp(clip)) == 4 * 64
    assert count_trainable(ZeroShotCLIP(clip)) == 0


def test_vit_b16_has_exactly_606208_trainable_parameters():
    """GalLoP's count: 2 x 4 prompts x 4 tokens x 512 + 768 x 768, on a random-init ViT-B/16.

    606,208 is in docs/methods/gallop.md#defaults.
    """
    model, _ = build_clip("ViT-B-16", pretrained=None, seed=0)
    gallop = GalLoP(model)
    assert count_trainable(gallop) == 606_208
    assert gallop.global_text.learner.ctx.shape == (4, 4, 512)
    assert gallop.visual.local_proj.weight.shape == (768, 768)


def test_zero_shot_uses_ensembled_templates(clip):
    zs = ZeroShotCLIP(clip, templates=["a photo of a {}.", "a drawing of a {}."])
    zs.set_class_names(["cat", "dog"])
    t = [
        clip.encode_text(open_clip.tokenize([f"a photo of a {n}.", f"a drawing of a {n}."]), True)
        for n in ("cat", "dog")
    ]
    ref = torch.nn.functional.normalize(torch.stack([x.mean(0) for x in t]), dim=-1)
    torch.testing.assert_close(zs.text_features()[0][:, 0], ref, rtol=1e-5, atol=1e-5)
    assert len(ZeroShotCLIP(clip).templates) == 80
