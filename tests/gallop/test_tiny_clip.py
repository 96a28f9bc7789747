"""The repo's tiny CLIP: its loss, its trainer (a few steps on tiny IDX files) and the committed checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from common.backbones.clip import build_clip
from common.data.datasets.fashion_mnist import load_fashion_mnist
from gallop import tiny_clip
from gallop.tiny_clip import (
    ASSET_DIR,
    CONFIG_NAME,
    WEIGHTS_NAME,
    captions,
    clean_canvas,
    contrastive_loss,
    render_items,
    sha256,
    zero_shot_accuracy,
)
from tests.conftest import ROOT, make_tiny_fashion_mnist


def _loss_by_loops(img: torch.Tensor, txt: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Independent computation: every same-class pair is a positive, uniform target weight, both directions."""
    b = len(y)
    s = scale * img @ txt.T
    rows, cols = [], []
    for i in range(b):
        pos = [j for j in range(b) if y[j] == y[i]]
        lse_row = torch.logsumexp(s[i], 0)
        rows.append(-sum(s[i, j] - lse_row for j in pos) / len(pos))
        lse_col = torch.logsumexp(s[:, i], 0)
        cols.append(-sum(s[j, i] - lse_col for j in pos) / len(pos))
    return (torch.stack(rows).mean() + torch.stack(cols).mean()) / 2


def test_contrastive_loss_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    scale = torch.tensor(7.0, dtype=torch.float64)
    ours = contrastive_loss(img, txt, y, scale)
    ref = _loss_by_loops(img, txt, y, 7.0)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours, (img, txt))
    g_ref = torch.autograd.grad(ref, (img, txt))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b: contrastive_loss(a, b, y, scale), (img, txt))
    # distinct classes: CLIP's symmetric InfoNCE
    d = torch.arange(7)
    logits = scale * img @ txt.T
    clip = (F.cross_entropy(logits, d) + F.cross_entropy(logits.T, d)) / 2
    torch.testing.assert_close(contrastive_loss(img, txt, d, scale), clip)


def test_captions_cover_every_id_class_with_templates_and_synonyms():
    texts, labels = captions()
    assert sorted(set(labels.tolist())) == list(range(8))
    assert "a photo of a T-shirt/top" in texts and "a photo of a Sneaker." in texts  # GalLoP / CoOp prompt styles
    for c in range(8):
        names = tiny_clip.CLASS_SYNONYMS[c]
        assert len(names) >= 3 and (labels == c).sum() == len(names) * len(tiny_clip.TEMPLATES)
    assert all(w not in " ".join(texts).lower() for w in ("bag", "boot"))  # held-out classes are never named


def test_render_items_is_deterministic_in_range_and_varies_size():
    items = torch.randint(1, 255, (40, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    a = render_items(items, torch.Generator().manual_seed(1))
    b = render_items(items, torch.Generator().manual_seed(1))
    assert a.shape == (40, 64, 64) and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    covered = (a > 0).flatten(1).float().mean(1)  # share of the canvas each item covers
    assert covered.min() < 0.2 and covered.max() > 0.6  # small items (24 px: 0.14 of the canvas) and canvas-sized ones
    assert clean_canvas(items).shape == (40, 64, 64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny CLIP trained on tiny IDX files (the real config: 64 px, 8 px patches)."""
    base = tmp_path_factory.mktemp("tiny_clip")
    root = make_tiny_fashion_mnist(base / "fmnist", per_class=6)
    kw = {
        "steps": 2,
        "batch_size": 8,
        "val_items": 8,
        "eval_every": 1,
        "threads": 1,
        "warmup": 1,
        "log": lambda s: None,
    }
    side = tiny_clip.train(base / "a", root, seed=0, **kw)
    return base, root, side, kw


def test_trainer_writes_a_folder_that_build_clip_loads(trained):
    base, root, side, _ = trained
    out = base / "a"
    for name in (CONFIG_NAME, WEIGHTS_NAME, "training.json", "curve.csv", "README.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "training.json").read_text()) == side
    assert side["weights_sha256"] == sha256(out / WEIGHTS_NAME) and side["seed"] == 0
    rows = (out / "curve.csv").read_text().split()
    assert rows[0] == "step,loss,lr,logit_scale,val_acc" and len(rows) == 3
    model, pre = build_clip(f"local-dir:{out}")
    assert pre.image_size == 64 and model.visual.patch_size == (8, 8)
    saved = load_file(str(out / WEIGHTS_NAME))
    assert all(v.dtype == torch.float16 for v in saved.values())
    state = model.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(state[k], v.float(), rtol=0, atol=0)
    # tokens no caption uses keep a zero embedding; the caption tokens are trained
    used = torch.unique(open_clip.tokenizer.tokenize(captions()[0]))
    emb = model.token_embedding.weight
    unused = torch.ones(len(emb), dtype=torch.bool)
    unused[used] = False
    assert emb[unused].abs().max() == 0 and emb[used].abs().sum(1).min() > 0
    assert side["token_rows_trained"] == len(used)


def test_trainer_same_seed_gives_the_same_weights(trained):
    base, root, side, kw = trained
    again = tiny_clip.train(base / "b", root, seed=0, **kw)
    other = tiny_clip.train(base / "c", root, seed=1, **kw)
    assert again["weights_sha256"] == side["weights_sha256"]
    assert other["weights_sha256"] != side["weights_sha256"]
    assert tiny_clip.main(["check", str(base / "b"), "--reference", str(base / "a")]) == 0
    assert tiny_clip.main(["check", str(base / "c"), "--reference", str(base / "a"), "--strict"]) == 1


def _fmnist_root() -> Path | None:
    for cand in (Path(os.environ.get("DATA_DIR", ROOT / "data")) / "fashion-mnist", ROOT / "data" / "fashion-mnist"):
        if (cand / "t10k-labels-idx1-ubyte.gz").exists() or (cand / "t10k-labels-idx1-ubyte").exists():
            return cand
    return None


def test_committed_checkpoint_matches_its_sidecar_and_loads():
    side = json.loads((ASSET_DIR / "training.json").read_text())
    assert sha256(ASSET_DIR / WEIGHTS_NAME) == side["weights_sha256"]
    assert (ASSET_DIR / WEIGHTS_NAME).stat().st_size < 8e6  # a few MB
    model, pre = build_clip(f"local-dir:{ASSET_DIR}")
    assert pre.image_size == 64 and model.visual.grid_size == (8, 8)  # 64 patches for the local prompts
    curve = (ASSET_DIR / side["curve"]).read_text().split()
    assert len(curve) == side["hyperparameters"]["steps"] + 1


@pytest.mark.skipif(
    _fmnist_root() is None, reason="Fashion-MNIST is not in data/fashion-mnist (make data-fashion-mnist)"
)
def test_committed_checkpoint_zero_shot_is_well_above_chance():
    side = json.loads((ASSET_DIR / "training.json").read_text())
    model, pre = build_clip(f"local-dir:{ASSET_DIR}")
    x, y = load_fashion_mnist(_fmnist_root(), "test")
    keep = np.concatenate([np.flatnonzero(y == c)[:25] for c in range(8)])  # 200 fixed clean test images
    acc = zero_shot_accuracy(
        model.eval(), clean_canvas(torch.from_numpy(x[keep])), torch.from_numpy(y[keep]), pre.mean, pre.std
    )
    assert acc >= 50.0  # chance: 12.5 %
    assert abs(acc - side["zero_shot_top1"]["clean_test"]) < 10.0  # the subset agrees with the full-test number
