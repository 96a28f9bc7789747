"""Retrieval grid: top-k and levels against brute force; the PNG is written with the level colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.viz.retrieval_grid import draw_retrieval_grid, level_colors, raw_image, retrieval_topk


def test_topk_and_levels_match_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(20, 4, generator=g)
    fine = torch.randint(0, 6, (20,), generator=g)
    labels = torch.stack([fine, fine // 3], dim=1)
    top, lv = retrieval_topk(emb, labels, [3, 7], k=5)
    e = torch.nn.functional.normalize(emb, dim=1)
    for r, q in enumerate([3, 7]):
        s = (e @ e[q]).tolist()
        order = sorted((j for j in range(20) if j != q), key=lambda j: -s[j])[:5]
        assert top[r].tolist() == order
        for c, j in enumerate(order):
            want = 2 if fine[j] == fine[q] else (1 if fine[j] // 3 == fine[q] // 3 else 0)
            assert lv[r, c].item() == want
    with pytest.raises(ValueError, match="0..19"):
        retrieval_topk(emb, labels, [20])


def test_level_colors_go_from_red_to_green() -> None:
    c = level_colors(2)
    assert len(c) == 3 and c[0][0] > 0.8 and c[2][1] > 0.6 and c[0] != c[1] != c[2]
    with pytest.raises(ValueError):
        level_colors(0)


def test_grid_png_has_coloured_borders(tmp_path: Path) -> None:
    imgs = [np.full((12, 12), 128, dtype=np.uint8) for _ in range(2)]
    retrieved = [[np.zeros((12, 12), dtype=np.uint8)] * 3 for _ in range(2)]
    levels = np.array([[2, 1, 0], [0, 0, 2]])
    path = tmp_path / "grid" / "g.png"
    draw_retrieval_grid(imgs, retrieved, levels, 2, row_titles=["A", "B"], title="t", path=path)
    arr = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for color in level_colors(2):
        rgb = np.round(np.array(color) * 255).astype(int)
        assert (np.abs(arr - rgb).sum(1) < 10).sum() > 20, f"no pixels of level colour {rgb}"
    with pytest.raises(ValueError, match="levels must lie"):
        draw_retrieval_grid(imgs, retrieved, levels + 1, 2)
    with pytest.raises(ValueError, match="k=3"):
        draw_retrieval_grid(imgs, [[imgs[0]], [imgs[0]]], levels, 2)


def test_raw_image_prefers_raw_pixels() -> None:
    class WithImages:
        images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)

    assert raw_image(WithImages(), 1).tolist() == [[4, 5], [6, 7]]

    class TensorOnly:
        def __getitem__(self, i):
            return {"image": torch.tensor([[[0.0, 2.0], [4.0, 4.0]]])}

    assert raw_image(TensorOnly(), 0).tolist() == [[0.0, 0.5], [1.0, 1.0]]


def test_callback_draws_saves_and_logs_to_wandb(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from common.viz.retrieval_grid import RetrievalGridCallback

    class TinySet(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.images = (torch.rand(12, 6, 6, generator=g) * 255).to(torch.uint8).numpy()
            fine = torch.arange(12) % 4
            self.labels = torch.stack([fine, fine // 2], dim=1)

        def __len__(self):
            return 12

        def __getitem__(self, i):
            return {"image": torch.from_numpy(self.images[i]).float()[None], "label": self.labels[i], "index": i}

    class Model(torch.nn.Module):
        device = torch.device("cpu")

        def embed(self, x):
            return x.flatten(1)

    class WandbLogger:  # the callback recognises the logger by its class name
        def __init__(self):
            self.calls = []

        def log_image(self, key, images):
            self.calls.append((key, images))

    wandb = WandbLogger()
    ds = TinySet()
    trainer = SimpleNamespace(
        is_global_zero=True,
        datamodule=SimpleNamespace(test_dataset=ds),
        default_root_dir=str(tmp_path),
        loggers=[wandb],
    )
    cb = RetrievalGridCallback(query_idx=[0, 5], k=3)
    model = Model().train()
    cb.on_test_end(trainer, model)
    assert model.training  # mode restored
    assert cb.last_path == tmp_path / "retrieval_grid.png" and cb.last_path.exists()
    info = json.loads((tmp_path / "retrieval_grid.json").read_text())
    top, lv = retrieval_topk(torch.from_numpy(ds.images).float().flatten(1), ds.labels, [0, 5], k=3)
    assert info["topk"] == top.tolist() and info["levels"] == lv.tolist() and info["num_levels"] == 2
    assert wandb.calls == [("test/retrieval_grid", [str(cb.last_path)])]
