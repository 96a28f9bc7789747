"""A corrupt HEAT feature cache is recomputed with a warning, never trusted, and never runs code."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from heat.backbones import create_classifier
from heat.cache import cache_key, cache_paths, extract_features, load_cached

KW = dict(backbone="resnet18-cifar", checkpoint=None, dataset="toy", split="train", transform="none")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _corrupt_sidecar(folder, sidecar, tmp_path):
    sidecar.write_text("{ not json")


def _garbage_array(folder, sidecar, tmp_path):
    (folder / "avg.npy").write_bytes(b"\x00garbage" * 10)


def _truncated_array(folder, sidecar, tmp_path):
    raw = (folder / "avg.npy").read_bytes()
    (folder / "avg.npy").write_bytes(raw[: len(raw) // 2])


def _pickled_object_array(folder, sidecar, tmp_path):
    np.save(folder / "avg.npy", np.array([_Payload(tmp_path / "pwned")] * 6, dtype=object), allow_pickle=True)


def _wrong_length(folder, sidecar, tmp_path):
    np.save(folder / "logits.npy", np.zeros((3, 5), np.float32))


def _missing_array(folder, sidecar, tmp_path):
    (folder / "std.npy").unlink()


@pytest.mark.parametrize(
    "damage",
    [_corrupt_sidecar, _garbage_array, _truncated_array, _pickled_object_array, _wrong_length, _missing_array],
)
def test_corrupt_cache_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    torch.manual_seed(0)
    model = create_classifier("resnet18", num_classes=5, cifar_stem=True)
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6) % 5
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    cache = tmp_path / "cache"
    first = extract_features(model, loader, cache_dir=cache, **KW)
    expected = {k: getattr(first, k).clone() for k in ("avg", "std", "logits")}
    del first
    folder, sidecar = cache_paths(cache, dataset="toy", split="train", key=cache_key(**KW))
    damage(folder, sidecar, tmp_path)
    with caplog.at_level(logging.WARNING, logger="heat.cache"):
        assert load_cached(cache, dataset="toy", split="train", key=cache_key(**KW)) is None
    assert "is unusable" in caplog.text and "recomputed" in caplog.text
    assert str(sidecar if damage is _corrupt_sidecar else folder) in caplog.text
    assert not (tmp_path / "pwned").exists()
    calls = []
    forward = model.forward_features
    model.forward_features = lambda t: calls.append(1) or forward(t)
    again = extract_features(model, loader, cache_dir=cache, **KW)
    assert calls  # the backbone ran again
    for k, v in expected.items():
        torch.testing.assert_close(getattr(again, k), v)
    assert json.loads(sidecar.read_text())["complete"]
    assert not (tmp_path / "pwned").exists()


def test_payload_is_real(tmp_path):
    """The object-array payload above does run a command under a plain unpickle (so the test above means something)."""
    pickle.loads(pickle.dumps(_Payload(tmp_path / "pwned")))
    assert (tmp_path / "pwned").exists()
