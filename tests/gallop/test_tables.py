"""Seed aggregation (mean ± population std) and the table rendering beside the published numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.utils.runs import write_status
from gallop.tables import ROOT, collect, mean_std, render


def _write(root, row, shots, seed, metrics):
    d = root / row / f"shots{shots}" / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_mean_std_is_population_std():
    mu, sd = mean_std([70.0, 72.0, 77.0])
    assert mu == pytest.approx(73.0)
    assert sd == pytest.approx(np.sqrt(((70 - 73) ** 2 + (72 - 73) ** 2 + (77 - 73) ** 2) / 3))


def test_collect_and_render(tmp_path):
    for seed, acc in ((1, 70.0), (2, 72.0), (3, 77.0)):
        _write(tmp_path, "dtd_16shot", 16, seed, {"test/acc": acc})
    _write(tmp_path, "dtd_16shot", 4, 1, {"test/acc": 60.0})
    _write(
        tmp_path,
        "imagenet_16shot",
        16,
        1,
        {
            "test/acc": 75.0,
            "test/dg/imagenet_v2/acc": 67.0,
            "test/ood/avg/gl_mcm/fpr95_closest": 0.25,
            "test/ood/avg/gl_mcm/auroc": 0.93,
        },
    )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.json").write_text("{}")
    _write(tmp_path, "dtd_16shot", 16, 4, {"test/acc": 10.0})
    write_status(tmp_path / "dtd_16shot" / "shots16" / "seed4", {"status": "failed", "error": "ValueError: x"})
    runs = collect(tmp_path)  # the failed seed 4 is skipped (with a warning)
    assert set(runs) == {("dtd_16shot", 16), ("dtd_16shot", 4), ("imagenet_16shot", 16)}
    assert sorted(runs[("dtd_16shot", 16)]) == [1, 2, 3]
    text = render(tmp_path, ROOT / "results" / "gallop" / "published.yaml", "cmd")
    assert "73.0 ± 2.9 (n=3)" in text  # dtd, 3 seeds
    assert "## Few-shot top-1 (%), 4 shots" in text and "60.0 ± 0.0 (n=1)" in text
    assert "67.0 ± 0.0 (n=1)" in text and "25.0 ± 0.0 (n=1) / 93.0 ± 0.0 (n=1)" in text
    assert "| GalLoP (published) | 75.1 | 96.7" in text
    assert "74.0 (2 datasets)" in text  # average of the dataset means (73.0 and 75.0)
