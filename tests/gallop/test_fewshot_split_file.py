"""A garbled few-shot split file is resampled with a warning (same seed, same subset), never trusted."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from gallop.fewshot import load_or_create_split, split_file

LABELS = np.repeat(np.arange(5), 6)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: "{ truncated",
        lambda d: json.dumps([1, 2]),
        lambda d: json.dumps({**d, "indices": [0, 999]}),
        lambda d: json.dumps({**d, "indices": [3, 3]}),
        lambda d: json.dumps({**d, "indices": ["0", 1]}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "indices"}),
    ],
)
def test_unreadable_split_file_is_resampled(tmp_path, caplog, damage):
    idx = load_or_create_split(LABELS, 2, 3, "coop_exact_k", tmp_path)
    f = split_file(tmp_path, 2, 3, "coop_exact_k")
    f.write_text(damage(json.loads(f.read_text())))
    with caplog.at_level(logging.WARNING, logger="gallop.fewshot"):
        again = load_or_create_split(LABELS, 2, 3, "coop_exact_k", tmp_path)
    assert str(f) in caplog.text and "resampling" in caplog.text
    np.testing.assert_array_equal(again, idx)
    assert json.loads(f.read_text())["indices"] == idx.tolist()  # rewritten


def test_split_file_of_another_train_set_still_raises(tmp_path):
    load_or_create_split(LABELS, 2, 3, "coop_exact_k", tmp_path)
    with pytest.raises(ValueError, match="another train set"):
        load_or_create_split(LABELS[:12], 2, 3, "coop_exact_k", tmp_path)
