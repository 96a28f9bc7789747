"""Seed statistics of demo records: mean ± std against numpy, paired differences, the verdict and reference rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.results.record import ResultRecord
from common.results.seeds import Stat, compare_runs, paired, seed_values, stat, verdict


def _rec(row: str, seed: int | None, value: float, method: str = "roadmap", table: str = "demo") -> ResultRecord:
    return ResultRecord(method=method, table=table, row=row, seed=seed, metrics={"map@r": value})


def test_stat_is_the_population_mean_and_std() -> None:
    vals = [0.31, 0.35, 0.40]
    s = Stat.of(vals)
    assert s.n == 3 and s.mean == pytest.approx(np.mean(vals)) and s.std == pytest.approx(np.std(vals, ddof=0))
    assert Stat.of([]).n == 0 and math.isnan(Stat.of([]).mean)
    assert Stat.of([0.5, float("nan")]) == Stat(0.5, 0.0, 1)  # a NaN (a metric that could not be computed) is skipped
    assert Stat(0.381, 0.004, 3).text() == "0.381 ± 0.004 (n=3)"
    assert Stat(0.012, 0.004, 3).text(100, 1, signed=True) == "+1.2 ± 0.4 (n=3)"


def test_seed_values_pick_the_method_table_and_row() -> None:
    recs = [_rec("a", 0, 0.1), _rec("a", 1, 0.2), _rec("b", 0, 0.9), _rec("a", 0, 0.7, table="main")]
    recs.append(_rec("a", 2, 0.5, method="happier"))
    assert seed_values(recs, "roadmap", "a", "map@r") == {0: 0.1, 1: 0.2}
    assert seed_values(recs, "roadmap", "a", "recall@1") == {}
    assert stat(recs, "roadmap", "a", "map@r").mean == pytest.approx(0.15)


def test_paired_difference_uses_the_seeds_both_rows_have() -> None:
    a = [_rec("a", 0, 0.50), _rec("a", 1, 0.40), _rec("a", 2, 0.45), _rec("a", 3, 0.99)]
    b = [_rec("b", 0, 0.45), _rec("b", 1, 0.38), _rec("b", 2, 0.41)]  # no seed 3
    d = paired(a + b, "roadmap", "a", "b", "map@r")
    diffs = [0.05, 0.02, 0.04]
    assert d.n == 3 and d.mean == pytest.approx(np.mean(diffs)) and d.std == pytest.approx(np.std(diffs))


@pytest.mark.parametrize(
    ("delta", "higher", "word"),
    [
        (Stat(0.03, 0.01, 3), True, "ahead"),
        (Stat(-0.03, 0.01, 3), True, "behind"),
        (Stat(0.005, 0.01, 3), True, "within noise"),
        (Stat(-0.03, 0.01, 3), False, "ahead"),  # lower is better (FPR95): a negative difference is a win
        (Stat(0.03, 0.0, 1), True, "one seed: no noise estimate"),
        (Stat(math.nan, math.nan, 0), True, "no runs"),
    ],
)
def test_verdict(delta: Stat, higher: bool, word: str) -> None:
    assert verdict(delta, higher_is_better=higher) == word


def test_compare_runs_flags_differences_beyond_twice_the_larger_std() -> None:
    ours = [_rec("a", s, v) for s, v in enumerate([0.40, 0.42, 0.44])]  # mean 0.42, std 0.01633
    ours += [_rec("b", s, v) for s, v in enumerate([0.30, 0.30, 0.30])]
    ours += [_rec("c", 0, 0.5)]
    ref = [_rec("a", s, v) for s, v in enumerate([0.41, 0.41, 0.41])]  # within 2 x 0.01633 of 0.42
    ref += [_rec("b", s, v) for s, v in enumerate([0.35, 0.36, 0.34])]  # 0.35 vs 0.30: beyond 2 x 0.00816
    ref += [_rec("c", 0, 0.6), _rec("d", 0, 0.1)]  # one seed each: no noise estimate; d only in the reference
    diffs = {d.row: d for d in compare_runs(ours, ref)}
    assert set(diffs) == {"a", "b", "c"}
    assert diffs["a"].beyond_noise is False and diffs["a"].noise == pytest.approx(2 * np.std([0.40, 0.42, 0.44]))
    assert diffs["b"].beyond_noise is True and diffs["b"].delta == pytest.approx(-0.05)
    assert diffs["c"].beyond_noise is None and diffs["c"].noise is None
