"""`make weights-timm` / `make weights-clip` write exactly the files the configs read (common/backbones/weights.py),
tested offline: timm's hub download is replaced by a seeded random state dict, open_clip's by a local file."""

from __future__ import annotations

import re
import subprocess

import pytest
import timm
import torch
from safetensors.torch import save_file

from common.backbones import weights as w
from common.backbones.clip import build_clip, resolve_source
from common.backbones.timm_backbone import TimmBackbone, WeightsNotFoundError, create_timm_model
from tests.conftest import CONFIG_DIR, ROOT


def test_names_with_and_without_a_tag():
    assert w.timm_stem("resnet50.tv_in1k") == "resnet50.tv_in1k"
    assert w.timm_stem("resnet50") == "resnet50.a1_in1k"  # timm's default tag, not torchvision's
    assert w.timm_file("test_resnet", "/W").as_posix() == "/W/timm/test_resnet.r160_in1k.safetensors"
    with pytest.raises(ValueError, match="no pretrained tag 'nope'"):
        w.timm_stem("resnet50.nope")
    with pytest.raises(ValueError, match="no model 'resnet5000'"):
        w.timm_stem("resnet5000")
    assert w.parse_clip_name("ViT-B-16-openai") == ("ViT-B-16", "openai")
    assert w.parse_clip_name("ViT-B-32-laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ValueError, match=r"tags of 'ViT-B-16': \['openai'"):
        w.parse_clip_name("ViT-B-16")


def test_every_weight_file_the_configs_read_has_a_fetchable_name():
    timm_names = w.config_timm_names()
    assert "resnet50.tv_in1k" in timm_names and "deit_small_distilled_patch16_224.fb_in1k" in timm_names
    for name in timm_names:  # `make weights-timm` with no NAME writes these files, under these names
        assert w.timm_stem(name) == name
    raw = "\n".join(p.read_text() for p in CONFIG_DIR.rglob("*.yaml"))
    assert len(timm_names) == len(set(re.findall(r"weights_dir\}/timm/([^\s\"']+)\.safetensors", raw)))
    assert w.config_clip_pairs() == [("ViT-B-16", "openai")]
    for model, tag in w.config_clip_pairs():
        assert w.parse_clip_name(f"{model}-{tag}") == (model, tag)


def test_fetch_timm_writes_the_file_the_backbone_loads(tmp_path, monkeypatch):
    """The hub download is replaced; everything else (tag resolution, timm's loader, saving) runs for real."""
    import timm.models._builder as builder

    torch.manual_seed(3)
    published = timm.create_model("test_resnet", pretrained=False).state_dict()
    asked = []

    def fake_hub(repo, *args, **kwargs):
        asked.append(repo)
        return {k: v.clone() for k, v in published.items()}

    monkeypatch.setattr(builder, "load_state_dict_from_hf", fake_hub)
    monkeypatch.setattr(w, "_require_online", lambda: None)
    out = w.fetch_timm("test_resnet", tmp_path)
    assert asked == ["timm/test_resnet.r160_in1k"] and out == tmp_path / "timm" / "test_resnet.r160_in1k.safetensors"
    # the config's way of reading it: name <model>.<tag>, weights <file>
    net = TimmBackbone("test_resnet.r160_in1k", weights=str(out))
    for k, v in net.model.state_dict().items():
        if k in published:
            torch.testing.assert_close(v, published[k])
    assert w.fetch_timm("test_resnet.r160_in1k", tmp_path) == out and len(asked) == 1  # already there: no download
    assert not list((tmp_path / "timm").glob(".*"))  # no temporary file left


def test_offline_is_refused_with_the_fix(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1 is set.*make weights-timm"):
        w.fetch_timm("test_resnet", tmp_path)


def test_fetch_clip_writes_the_folder_build_clip_reads(tmp_path, monkeypatch):
    import open_clip.pretrained as op

    src, _ = build_clip("tiny_clip", seed=1)
    file = tmp_path / "dl" / "open_clip_model.safetensors"
    file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(file))
    cfg = {"hf_hub": "x/y/", "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5), "quick_gelu": False}
    calls = []
    monkeypatch.setattr(op, "get_pretrained_cfg", lambda m, t: cfg if (m, t) == ("tiny_clip", "t1") else {})
    monkeypatch.setattr(op, "download_pretrained", lambda c, cache_dir=None: calls.append(c) or str(file))
    monkeypatch.setattr(w, "_require_online", lambda: None)
    out = w.fetch_clip("tiny_clip", "t1", tmp_path / "W")
    assert out == tmp_path / "W" / "open_clip" / "tiny_clip-t1"
    assert resolve_source("tiny_clip", "t1", tmp_path / "W") == (f"local-dir:{out}", None)  # what the configs resolve
    w.fetch_clip("tiny_clip", "t1", tmp_path / "W")
    assert len(calls) == 1  # second run: already there


def test_missing_weights_message_names_a_target_that_writes_that_file(tmp_path):
    path = tmp_path / "timm" / "test_resnet.r160_in1k.safetensors"
    with pytest.raises(WeightsNotFoundError, match=r"`make weights-timm NAME=test_resnet.r160_in1k`") as e:
        create_timm_model("test_resnet.r160_in1k", weights=str(path))
    name = re.search(r"NAME=(\S+)`", str(e.value)).group(1)
    assert w.timm_file(name, tmp_path) == path


def _dry_run(*args: str) -> str:
    cmd = ["make", "-n", "-o", ".venv/.installed", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_weights_targets_override_offline_and_pass_the_name():
    dry = _dry_run("weights-timm", "NAME=resnet50.tv_in1k", "WEIGHTS_DIR=/w w")
    assert (
        'HF_HUB_OFFLINE=0 ".venv/bin/python" -m common.backbones.weights --weights-dir "/w w" timm resnet50.tv_in1k'
        in dry
    )
    assert _dry_run("weights-clip", "CLIP_MODEL=ViT-B-16", "CLIP_TAG=openai").strip().endswith("clip ViT-B-16-openai")
    assert _dry_run("weights-clip", "NAME=RN50-openai").strip().endswith("clip RN50-openai")
