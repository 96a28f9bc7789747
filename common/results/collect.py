"""``make tables``: every table of every method from the result records and ``results/<method>/published.yaml``.

    python -m common.results.collect [--records results/records] [--results results] [--out results/tables]
                                     [--method roadmap ...] [--wandb]

For each cell: our value is the mean ± std over seeds of the records of the row (std is the population std,
ddof=0, as CoOp's and GalLoP's scripts; ``n`` seeds shown), scaled to the table's unit; the published value is read
from published.yaml (``MISSING`` where the paper gives none); Δ = ours − published. A row with no record yet shows
``NO RECORD``; a published-only row (a method this repository does not run) shows ``—``. Records of a
(method, table) that has no published table (the demos) come out as tables of their own, every metric key a column.

Each row says which protocol made its numbers (the records' ``protocol``: precision, few-shot sampling), and a
published average that disagrees with the mean of the published values it averages (beyond rounding,
:data:`MEAN_TOLERANCE`) is flagged ``(!)`` with a note giving the recomputed mean (GalLoP's CLIP row: 75.7 printed,
64.77 computed).

Writes ``<out>/<method>.md`` per method and ``<out>/tables.json`` (what ``make report`` and the wandb logger read).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.results.published import Column, Published, RowSpec, TableSpec, load_published
from common.results.record import ROOT, ResultRecord, default_records_dir, load_records

__all__ = ["Cell", "TableResult", "collect", "collect_table", "main", "mean_std", "to_markdown"]

METHODS = ("roadmap", "happier", "heat", "gallop")
MISSING = "MISSING"  # the paper gives no value
NO_RECORD = "NO RECORD"  # a row we run, with no record yet
NOT_OURS = "—"  # a published-only row
# a published mean of values printed with one decimal may differ from the mean of those rounded values by up to
# 0.05 (its own rounding) + 0.05 (theirs); beyond that it is flagged
MEAN_TOLERANCE = 0.1


@dataclass
class Cell:
    """One cell: ``mean``/``std`` over ``n`` seeds (None without a value), the published value and Δ."""

    mean: float | None = None
    std: float | None = None
    n: int = 0
    published: float | None = None
    delta: float | None = None
    status: str = "ok"  # ok | no_record | not_logged | not_ours
    flag: str | None = None  # why the published value is suspect (it disagrees with the values it averages)

    def ours_text(self, digits: int = 2) -> str:
        if self.status == "not_ours":
            return NOT_OURS
        if self.status == "no_record":
            return NO_RECORD
        if self.mean is None:
            return "not logged"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"

    def published_text(self) -> str:
        if self.published is None:
            return MISSING
        return f"{self.published:g}" + (" (!)" if self.flag else "")

    def delta_text(self, digits: int = 2) -> str:
        return "" if self.delta is None else f"{self.delta:+.{digits}f}"


@dataclass
class RowResult:
    key: str
    label: str
    cells: dict[str, Cell]
    source: str = ""
    note: str | None = None
    ours_rows: list[str] = field(default_factory=list)
    protocol: str = ""  # the records' protocol, e.g. "precision 16-mixed, sampling coop_exact_k"


@dataclass
class TableResult:
    method: str
    id: str
    title: str
    columns: list[str]
    rows: list[RowResult]
    source: str = ""
    note: str | None = None

    @property
    def anchor(self) -> str:
        return f"{self.method}-{self.id}".replace("_", "-").lower()


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0) of the per-seed values."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / n)


def _index(records: list[ResultRecord]) -> dict[tuple[str, str], dict[int | None, ResultRecord]]:
    """``{(method, row): {seed: record}}``; a later record of the same (method, row, seed) replaces an earlier."""
    out: dict[tuple[str, str], dict[int | None, ResultRecord]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.date):
        out[(r.method, r.row)][r.seed] = r
    return out


def _per_seed(
    column: Column, rows: list[str], params: dict[str, str], method: str, index: dict, scale: float
) -> tuple[dict[int | None, float], bool]:
    """``({seed: value}, any record found)`` for a metric column: per seed, the mean over ``rows`` (every row must
    have a record of that seed) of the mean over the column's keys, times ``scale``."""
    by_row = [index.get((method, r), {}) for r in rows]
    found = any(by_row)
    seeds = set.intersection(*(set(d) for d in by_row)) if by_row else set()
    keys = column.keys(params)
    out = {}
    for seed in seeds:
        values = [d[seed].metrics.get(k) for d in by_row for k in keys]
        if values and all(v is not None and not math.isnan(v) for v in values):
            out[seed] = scale * sum(values) / len(values)
    return out, found


def protocol_text(records: list[ResultRecord]) -> str:
    """``"name value, ..."`` over the records' ``protocol``; a setting whose records disagree lists every value and
    says ``mixed``."""
    values: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for k, v in r.protocol.items():
            values[k].add(v)
    parts = []
    for k in sorted(values):
        vs = sorted(values[k])
        parts.append(f"{k} {vs[0]}" if len(vs) == 1 else f"{k} {' / '.join(vs)} (mixed)")
    return ", ".join(parts)


def _published_mean_flag(col: Column, row: RowSpec) -> str | None:
    """A note when the published value of a mean-of-columns cell is not the mean of the published values it
    averages (beyond :data:`MEAN_TOLERANCE`); None when it agrees or a value is missing."""
    pub = row.published.get(col.name)
    parts = [row.published.get(c) for c in col.mean_of_columns]
    if pub is None or not parts or any(v is None for v in parts):
        return None
    mean = sum(parts) / len(parts)
    if abs(pub - mean) <= MEAN_TOLERANCE + 1e-9:
        return None
    return (
        f"published {pub:g}, but the mean of the {len(parts)} published values it averages is {mean:.2f} "
        f"(a typo in the source?); Δ is against the published {pub:g}"
    )


def _cell(seed_values: dict, found: bool, has_rows: bool, published: float | None) -> Cell:
    if not has_rows:
        return Cell(published=published, status="not_ours")
    if not seed_values:
        return Cell(published=published, status="not_logged" if found else "no_record")
    mean, std = mean_std(list(seed_values.values()))
    delta = None if published is None else mean - published
    return Cell(mean=mean, std=std, n=len(seed_values), published=published, delta=delta)


def collect_table(spec: TableSpec, published: Published, index: dict) -> TableResult:
    """One table: every row of ``spec`` with our cells from the indexed records."""
    rows = []
    for row in spec.rows.values():
        seeds: dict[str, dict] = {}
        cells: dict[str, Cell] = {}
        for col in spec.columns:
            if col.mean_of_columns:
                continue
            ours = row.ours_rows(col.name)
            scale = spec.scale if col.scale is None else col.scale
            values, found = _per_seed(col, ours, row.params, published.method, index, scale) if ours else ({}, False)
            seeds[col.name] = values
            cells[col.name] = _cell(values, found, bool(ours), row.published.get(col.name))
        for col in spec.columns:
            if col.mean_of_columns:
                cells[col.name] = _mean_of_columns(col, row, seeds, cells)
                cells[col.name].flag = _published_mean_flag(col, row)
        used = [rec for r in row.all_rows() for rec in index.get((published.method, r), {}).values()]
        rows.append(
            RowResult(
                key=row.key,
                label=row.label,
                cells={c.name: cells[c.name] for c in spec.columns},
                source=published.cite(row.source or spec.source),
                note=row.note,
                ours_rows=row.all_rows(),
                protocol=protocol_text(used),
            )
        )
    return TableResult(
        method=published.method,
        id=spec.id,
        title=spec.title,
        columns=[c.name for c in spec.columns],
        rows=rows,
        source=published.cite(spec.source),
        note=spec.note,
    )


def _mean_of_columns(col: Column, row: RowSpec, seeds: dict[str, dict], cells: dict[str, Cell]) -> Cell:
    """Per seed, the mean of the named columns (a seed counts only when every column has it)."""
    parts = [seeds.get(c, {}) for c in col.mean_of_columns]
    has_rows = all(cells[c].status != "not_ours" for c in col.mean_of_columns)
    common_seeds = set.intersection(*(set(p) for p in parts)) if parts else set()
    values = {s: sum(p[s] for p in parts) / len(parts) for s in common_seeds}
    found = any(cells[c].status in ("ok", "not_logged") for c in col.mean_of_columns)
    return _cell(values, found, has_rows, row.published.get(col.name))


def _adhoc_tables(records: list[ResultRecord], covered: set[tuple[str, str]]) -> list[TableResult]:
    """Tables for records whose (method, row) no published table names (the demos): every metric key a column,
    values as logged (no scaling), no published values."""
    groups: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in records:
        if (r.method, r.row) not in covered:
            groups[(r.method, r.table)].append(r)
    out = []
    for (method, table), recs in sorted(groups.items()):
        index = _index(recs)
        keys = sorted({k for r in recs for k in r.metrics})
        rows = []
        for row in sorted({r.row for r in recs}):
            cells = {}
            for k in keys:
                values, found = _per_seed(Column(name=k, metric=k), [row], {}, method, index, 1.0)
                cells[k] = _cell(values, found, True, None)
            protocol = protocol_text(list(index.get((method, row), {}).values()))
            rows.append(RowResult(key=row, label=row, cells=cells, ours_rows=[row], protocol=protocol))
        title = f"{method}, {table} (values as logged, no published counterpart)"
        out.append(TableResult(method=method, id=table, title=title, columns=keys, rows=rows))
    return out


def collect(
    records: list[ResultRecord], results_dir: str | Path = ROOT / "results", methods=METHODS
) -> list[TableResult]:
    """Every table of every method in ``methods`` (published tables first, then tables of uncovered records)."""
    index = _index(records)
    tables, covered = [], set()
    for method in methods:
        path = Path(results_dir) / method / "published.yaml"
        if not path.is_file():
            continue
        published = load_published(path)
        if published.method != method:
            raise ValueError(f"{path}: `method: {published.method}` but the file is under results/{method}/")
        for spec in published.tables.values():
            tables.append(collect_table(spec, published, index))
            covered |= {(method, r) for row in spec.rows.values() for r in row.all_rows()}
    tables += _adhoc_tables([r for r in records if r.method in methods], covered)
    return tables


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(table: TableResult, digits: int = 2) -> str:
    """The table as Markdown: per row, a line of ours (mean ± std (n)), a line of published values and a line of Δ."""
    lines = [f"### {table.title}", ""]
    if table.source:
        lines += [f"Published values: {table.source}.", ""]
    head = "| row | | " + " | ".join(_esc(c) for c in table.columns) + " |"
    lines += [head, "|---|---|" + "---|" * len(table.columns)]
    notes = []
    for row in table.rows:
        label = _esc(row.label) + (f" (`{', '.join(row.ours_rows)}`)" if row.ours_rows else "")
        label += f" [{_esc(row.protocol)}]" if row.protocol else ""
        cells = [row.cells[c] for c in table.columns]
        lines.append(f"| {label} | ours | " + " | ".join(c.ours_text(digits) for c in cells) + " |")
        if any(c.published is not None for c in cells) or not any(c.status == "not_ours" for c in cells):
            lines.append("| | published | " + " | ".join(c.published_text() for c in cells) + " |")
        if any(c.delta is not None for c in cells):
            lines.append("| | Δ | " + " | ".join(c.delta_text(digits) for c in cells) + " |")
        if row.note or (row.source and row.source != table.source):
            notes.append(f"- {row.label}: " + "; ".join(x for x in (row.note, row.source) if x))
        notes += [f"- (!) {row.label}, {c}: {row.cells[c].flag}" for c in table.columns if row.cells[c].flag]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def tables_to_json(tables: list[TableResult]) -> list[dict]:
    return [asdict(t) | {"anchor": t.anchor} for t in tables]


def write_tables(tables: list[TableResult], out_dir: str | Path, command: str) -> list[Path]:
    """``<out>/<method>.md`` per method and ``<out>/tables.json``; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    by_method: dict[str, list[TableResult]] = defaultdict(list)
    for t in tables:
        by_method[t.method].append(t)
    for method, ts in by_method.items():
        text = [f"# {method}: our records beside the published numbers", "", f"Made by `{command}`.", ""]
        text += [f"{MISSING}: the paper gives no value; {NO_RECORD}: no run of ours yet; {NOT_OURS}: not run here.", ""]
        text += [to_markdown(t) for t in ts]
        path = out_dir / f"{method}.md"
        path.write_text("\n".join(text))
        written.append(path)
    path = out_dir / "tables.json"
    path.write_text(json.dumps(tables_to_json(tables), indent=1) + "\n")
    return [*written, path]


def main(argv: list[str] | None = None) -> list[TableResult]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", default=None, help="records folder (default: $RESULTS_RECORDS_DIR or results/records)")
    p.add_argument("--results", default=str(ROOT / "results"), help="folder holding <method>/published.yaml")
    p.add_argument(
        "--out",
        default=os.environ.get("RESULTS_TABLES_DIR") or str(ROOT / "results" / "tables"),
        help="output folder (default: $RESULTS_TABLES_DIR or results/tables)",
    )
    p.add_argument("--method", action="append", choices=METHODS, help="only these methods (repeatable)")
    p.add_argument("--wandb", action="store_true", help="also log the tables as wandb Tables (offline by default)")
    args = p.parse_args(argv)
    records_dir = Path(args.records) if args.records else default_records_dir()
    records = load_records(records_dir) if records_dir.is_dir() else []
    tables = collect(records, args.results, tuple(args.method or METHODS))
    command = "python -m common.results.collect" + ("" if not argv else " " + " ".join(argv))
    written = write_tables(tables, args.out, command)
    filled = sum(c.status == "ok" for t in tables for r in t.rows for c in r.cells.values())
    print(f"{len(records)} record(s) from {records_dir}; {len(tables)} table(s), {filled} cell(s) of ours filled")
    for path in written:
        print(f"  wrote {path}")
    if args.wandb:
        from common.results.wandb_tables import log_tables

        run_dir = log_tables(tables)
        print(f"  wandb tables logged: {run_dir}")
    return tables


if __name__ == "__main__":
    main()
