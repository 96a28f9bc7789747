"""benchmarks/bench_gpu.py's training-step part in its tiny mode: every method's step runs for real on the CPU, its
phase-by-phase split gives the plain step's loss and gradients, and the printed lines parse."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
LINE = re.compile(r"^(train_step\w*)\[method=(\w+),config=([\w/]+)\] (.*)$")


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings, as when run from benchmarks/
    import bench_gpu
    import train_step_timing

    yield bench_gpu, train_step_timing
    for name in ("bench_gpu", "train_step_timing"):
        sys.modules.pop(name, None)


def parse(out: str) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
    """``{(method, config): {line kind: {key: value}}}`` of the ``train_step*`` lines."""
    rows: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            kind, method, config, rest = m.groups()
            fields = dict(kv.split("=", 1) for kv in rest.split())
            rows.setdefault((method, config), {})[kind] = fields
    return rows


def test_tiny_mode_runs_every_method_and_prints_parseable_lines(bench, capsys):
    bench_gpu, timing = bench
    assert bench_gpu.main(["--tiny", "--device", "cpu"]) == 0
    rows = parse(capsys.readouterr().out)
    assert set(rows) == {(r.method, r.experiment) for r in timing.ROWS}
    assert {m for m, _ in rows} == {"roadmap", "happier", "heat", "gallop"}
    for (method, config), kinds in rows.items():
        assert set(kinds) == {"train_step", "train_step_check", "train_step_parts"}, (method, config)
        check = kinds["train_step_check"]
        assert check["ok"] == "1" and float(check["loss_diff"]) <= 1e-5, (config, check)
        step = kinds["train_step"]
        assert (step["precision"], step["device"], step["tiny"], step["reps"]) == ("32-true", "cpu", "1", "1")
        v = {k: float(step[k]) for k in ("total_ms", "ours_ms", "share", "backbone_ms", "optim_ms", "split_ms")}
        assert all(math.isfinite(x) and x >= 0 for x in v.values()), (config, v)
        assert v["total_ms"] > 0 and v["ours_ms"] > 0 and 0 < v["share"] <= 1
        assert v["share"] == pytest.approx(v["ours_ms"] / v["split_ms"], rel=1e-2, abs=1e-3)
        assert v["ours_ms"] + v["backbone_ms"] + v["optim_ms"] == pytest.approx(v["split_ms"], rel=1e-2, abs=0.02)
        assert float(step["items_per_s"]) == pytest.approx(int(step["batch"]) / v["total_ms"] * 1e3, rel=1e-2)
        assert math.isnan(float(step["peak_mb"]))  # CUDA only
        parts = {k: float(x) for k, x in kinds["train_step_parts"].items() if k.endswith("_ms")}
        phases = {k: x for k, x in parts.items() if not k.startswith(("ours_", "ref_"))}
        assert sum(phases.values()) + v["optim_ms"] == pytest.approx(v["split_ms"], rel=1e-2, abs=0.02)
        ours = sum(x for k, x in parts.items() if k.startswith("ours_"))
        assert ours == pytest.approx(v["ours_ms"], rel=1e-2, abs=0.02)
        if method == "heat":  # cached features: no backbone in the step
            assert v["backbone_ms"] == 0 and set(phases) == {"sgld_ms", "cd_loss_ms"}
        else:
            assert v["backbone_ms"] > 0
    happier = rows[("happier", "happier/sop_happier")]["train_step_parts"]
    assert happier["labels"] == "16x2" and happier["loss"] == "0.9*sup_hap+0.1*cluster"


def test_split_check_catches_a_split_that_skips_the_backbone_backward(bench):
    _, timing = bench
    row = next(r for r in timing.ROWS if r.name == "roadmap_resnet50")
    dev = torch.device("cpu")
    case, precision = timing.build_case(row, tiny=True, dev=dev)
    prec = timing.Precision(precision, dev)
    assert timing.check_split(case, prec, dev) == (0.0, 0.0)

    def no_backbone_backward(ph, prec):
        z = case.module.embed(case.batch["image"])
        total, _ = case.module.compute_loss(z.detach().requires_grad_(True), case.batch["label"])
        total.backward()
        return total.detach()

    case.split = no_backbone_backward
    loss_diff, grad_diff = timing.check_split(case, prec, dev)
    assert loss_diff == 0.0 and grad_diff == math.inf  # the backbone got no gradient


def test_a_failing_row_prints_an_error_line_and_the_others_still_run(bench, capsys, monkeypatch):
    bench_gpu, timing = bench
    real = timing.build_case

    def build(row, tiny, dev):
        if row.name == "heat_imagenet_gmm":
            raise RuntimeError("broken on purpose")
        return real(row, tiny, dev)

    monkeypatch.setattr(timing, "build_case", build)
    assert bench_gpu.main(["--tiny", "--device", "cpu", "--methods", "heat"]) == 1
    out = capsys.readouterr().out
    assert "train_step_error[method=heat,config=heat/imagenet_gmm] error=RuntimeError" in out
    timed = {key for key, kinds in parse(out).items() if "train_step" in kinds}
    assert timed == {("heat", "heat/imagenet_el")}


def test_hierarchical_labels_nest_and_split_the_batch_in_two_super_classes(bench):
    _, timing = bench
    y = timing.hierarchical_labels(16, 2)
    assert y.shape == (16, 2) and torch.equal(y[:, 0], torch.arange(16) // 4)
    assert torch.equal(y[:, 1], (torch.arange(16) >= 8).long())
    y3 = timing.hierarchical_labels(32, 3)
    for lvl in (1, 2):  # each finer group sits in one coarser group
        for fine in y3[:, lvl - 1].unique():
            assert y3[y3[:, lvl - 1] == fine, lvl].unique().numel() == 1
    assert y3[:, 1].unique().numel() == 4 and y3[:, 2].unique().numel() == 2
    assert torch.equal(timing.hierarchical_labels(8, 1), torch.arange(8) // 4)


def test_unknown_method_and_tiny_with_metrics_are_errors(bench):
    bench_gpu, _ = bench
    with pytest.raises(SystemExit, match="unknown method or row"):
        bench_gpu.main(["--tiny", "--device", "cpu", "--methods", "roadmapp"])
    with pytest.raises(SystemExit):
        bench_gpu.main(["--tiny", "--part", "metrics"])
