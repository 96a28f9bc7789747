"""Seed statistics of result records: a row's mean ± std over seeds, paired differences between two rows, and the
comparison of a run with a reference run, with run-to-run noise defined by the seeds' std.

Used by the demos (their verdicts against a paper's claim) and by ``make report`` (where a demo run differs from the
committed reference run in ``results/reference/``). The std is the population std (ddof = 0), as in
``common.results.collect``.

Rules (stated once, here):

- **paired difference** of rows ``a`` and ``b`` on a key: ``d_s = a_s - b_s`` for every seed ``s`` that both rows
  have (same seed = same data subset, same initialisation); its mean ± std over seeds;
- **verdict**: with at least 2 seeds, ``a`` is *ahead* when ``mean(d) > std(d)``, *behind* when
  ``mean(d) < -std(d)``, else *within noise*; with one seed there is no noise estimate and the verdict says so;
- **differs from the reference** (``beyond_noise``): ``|mean_ours - mean_ref| > 2 * max(std_ours, std_ref)``, both
  with at least 2 seeds; otherwise the noise is unknown and the difference is shown without a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from common.results.record import ResultRecord

__all__ = ["MIN_SEEDS", "RefDiff", "Stat", "compare_runs", "paired", "seed_values", "stat", "verdict"]

MIN_SEEDS = 3  # a verdict against a paper's claim needs this many seeds, else it says it rests on fewer


@dataclass(frozen=True)
class Stat:
    """Mean ± std (ddof = 0) over ``n`` seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        if not vals:
            return cls(math.nan, math.nan, 0)
        mean = sum(vals) / len(vals)
        return cls(mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)), len(vals))

    def text(self, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
        if self.n == 0:
            return "n/a"
        sign = "+" if signed else ""
        return f"{self.mean * scale:{sign}.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


def seed_values(records: Iterable[ResultRecord], method: str, row: str, key: str, table: str = "demo") -> dict:
    """``{seed: value}`` of ``key`` in the records of ``(method, table, row)``."""
    return {
        r.seed: r.metrics[key]
        for r in records
        if (r.method, r.table, r.row) == (method, table, row) and key in r.metrics
    }


def stat(records: Iterable[ResultRecord], method: str, row: str, key: str, table: str = "demo") -> Stat:
    return Stat.of(seed_values(records, method, row, key, table).values())


def paired(records: list[ResultRecord], method: str, row_a: str, row_b: str, key: str, table: str = "demo") -> Stat:
    """Mean ± std over the seeds both rows have of ``a_s - b_s``."""
    a, b = seed_values(records, method, row_a, key, table), seed_values(records, method, row_b, key, table)
    return Stat.of(a[s] - b[s] for s in sorted(set(a) & set(b), key=str))


def verdict(delta: Stat, higher_is_better: bool = True) -> str:
    """``ahead`` / ``behind`` / ``within noise`` from a paired difference (see the module docstring), or
    ``one seed: no noise estimate`` / ``no runs``."""
    if delta.n == 0:
        return "no runs"
    if delta.n < 2:
        return "one seed: no noise estimate"
    d = delta.mean if higher_is_better else -delta.mean
    if d > delta.std:
        return "ahead"
    if d < -delta.std:
        return "behind"
    return "within noise"


@dataclass(frozen=True)
class RefDiff:
    """One (method, row, key) of a run beside the reference run."""

    method: str
    row: str
    key: str
    ours: Stat
    reference: Stat

    @property
    def delta(self) -> float:
        return self.ours.mean - self.reference.mean

    @property
    def noise(self) -> float | None:
        """2 x the larger seed std of the two runs; None when either has fewer than 2 seeds."""
        if self.ours.n < 2 or self.reference.n < 2:
            return None
        return 2.0 * max(self.ours.std, self.reference.std)

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.noise is None or math.isnan(self.delta) else abs(self.delta) > self.noise


def compare_runs(ours: list[ResultRecord], reference: list[ResultRecord], table: str = "demo") -> list[RefDiff]:
    """Every (method, row, metric key) that both runs have, in a stable order."""
    keys = sorted(
        {(r.method, r.row, k) for r in ours if r.table == table for k in r.metrics}
        & {(r.method, r.row, k) for r in reference if r.table == table for k in r.metrics}
    )
    return [RefDiff(m, row, k, stat(ours, m, row, k, table), stat(reference, m, row, k, table)) for m, row, k in keys]
