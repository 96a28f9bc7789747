"""common.backbones.clip: random-init tiny models, weights from a file / a tag folder / local-dir:, clear errors."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from common.backbones.clip import ClipWeightsNotFoundError, build_clip, register_configs, resolve_source, tag_dir


def _images(n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_tiny_configs_are_registered_with_open_clip():
    register_configs()
    assert {"tiny_clip", "tiny_clip_rn"} <= set(open_clip.list_models())


@pytest.mark.parametrize("name,size", [("tiny_clip", 32), ("tiny_clip_rn", 64)])
def test_random_init_tiny_model_builds_and_encodes(name, size):
    model, pre = build_clip(name, pretrained=None, seed=0)
    assert pre.image_size == size
    assert pre.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    feats = model.encode_image(_images(size=size))
    assert feats.shape == (2, 32)
    text = model.encode_text(open_clip.tokenize(["a photo of a cat"]))
    assert text.shape == (1, 32)


def test_seed_makes_random_init_reproducible():
    a, _ = build_clip("tiny_clip", seed=3)
    b, _ = build_clip("tiny_clip", seed=3)
    c, _ = build_clip("tiny_clip", seed=4)
    assert torch.equal(a.visual.proj, b.visual.proj)
    assert not torch.equal(a.visual.proj, c.visual.proj)


def _save_local_dir(model, folder, quick_gelu=True):
    folder.mkdir(parents=True)
    cfg = open_clip.get_model_config("tiny_clip")
    cfg["quick_gelu"] = quick_gelu
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))


def test_weights_load_from_tag_folder_file_and_local_dir(tmp_path):
    src, _ = build_clip("tiny_clip", seed=1)
    folder = tag_dir(tmp_path, "tiny_clip", "mytag")
    _save_local_dir(src, folder)
    ref = src.encode_image(_images())

    by_tag, _ = build_clip("tiny_clip", pretrained="mytag", weights_dir=tmp_path, seed=99)
    by_dir, _ = build_clip(f"local-dir:{folder}", seed=98)
    by_file, _ = build_clip("tiny_clip", pretrained=str(folder / "open_clip_model.safetensors"), seed=97)
    for m in (by_tag, by_dir, by_file):
        torch.testing.assert_close(m.encode_image(_images()), ref)
    # a random init with another seed really differs (so the loads above are not vacuous)
    other, _ = build_clip("tiny_clip", seed=99)
    assert not torch.allclose(other.encode_image(_images()), ref)


def test_missing_tag_weights_name_expected_file_and_make_target(tmp_path):
    with pytest.raises(ClipWeightsNotFoundError) as e:
        build_clip("ViT-B-16", pretrained="openai", weights_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "open_clip" / "ViT-B-16-openai" / "open_clip_model.safetensors") in msg
    assert "make weights-clip" in msg


def test_missing_file_and_local_dir_are_named(tmp_path):
    with pytest.raises(ClipWeightsNotFoundError, match="nothere.safetensors"):
        build_clip("tiny_clip", pretrained=str(tmp_path / "nothere.safetensors"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ClipWeightsNotFoundError, match="open_clip_config.json"):
        build_clip(f"local-dir:{tmp_path / 'emptydir'}")


def test_tag_without_weights_dir_is_a_clear_error():
    with pytest.raises(ValueError, match="weights_dir"):
        resolve_source("ViT-B-16", "openai", None)


def test_a_tag_is_never_passed_to_open_clip(tmp_path):
    folder = tag_dir(tmp_path, "tiny_clip", "t")
    src, _ = build_clip("tiny_clip", seed=0)
    _save_local_dir(src, folder)
    name, pretrained = resolve_source("tiny_clip", "t", tmp_path)
    assert name == f"local-dir:{folder}" and pretrained is None


def test_fetch_weights_writes_a_folder_that_build_clip_loads(tmp_path, monkeypatch):
    """`make weights-clip` path, with open_clip's downloader replaced by a local file (nothing downloads in tests)."""
    import open_clip.pretrained as op

    from common.backbones.clip import fetch_weights

    src, _ = build_clip("tiny_clip", seed=5)
    weights = tmp_path / "dl" / "open_clip_model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    cfg = {
        "hf_hub": "x/y/",
        "mean": (0.1, 0.2, 0.3),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "quick_gelu": True,
    }
    monkeypatch.setattr(op, "get_pretrained_cfg", lambda model, tag: cfg if (model, tag) == ("tiny_clip", "t1") else {})
    monkeypatch.setattr(op, "download_pretrained", lambda c, cache_dir=None: str(weights))
    out = fetch_weights("tiny_clip", "t1", tmp_path / "w")
    assert out == tag_dir(tmp_path / "w", "tiny_clip", "t1")
    saved = json.loads((out / "open_clip_config.json").read_text())
    assert saved["model_cfg"]["quick_gelu"] is True and saved["preprocess_cfg"]["size"] == 32
    model, pre = build_clip("tiny_clip", pretrained="t1", weights_dir=tmp_path / "w")
    assert pre.mean == (0.1, 0.2, 0.3)
    torch.testing.assert_close(model.encode_image(_images()), src.encode_image(_images()))
    with pytest.raises(ValueError, match="no tag"):
        fetch_weights("tiny_clip", "nope", tmp_path / "w")
