"""``results/<method>/published.yaml``: the papers' numbers, with sources, in one shape for every method.

The same file also says how our records fill each table. Shape (every key is checked; an unknown key is an error)::

    method: roadmap                       # the method package
    paper: "Ramzi et al., ..., NeurIPS 2021, arXiv 2110.01445"
    sources:                              # citation keys -> full citation (paper + table number, or 3rd-party page)
      pwc: "https://paperswithcode2.com/paper/244287 (3rd-party Papers-with-Code archive, not checked against the PDF)"
    notes: ["..."]                        # free text kept with the numbers
    tables:
      main:                               # the table id; experiments set `table: main`
        title: "ROADMAP vs ... (R@1, mAP@R, %)"
        source: pwc                       # default citation of the values in this table (a key of `sources`)
        scale: 100                        # our logged values x scale = the unit of the published numbers (default 100)
        columns:                          # each column reads one metric key of our records (docs/results.md)
          - {name: R@1, metric: recall@1}
          - {name: Average-mAP, mean_of: [map, level1/map, level2/map]}    # mean of several keys of one record
          - {name: average, mean_of_columns: [imagenet, caltech101]}       # mean of other columns of the row
          - {name: acc, metric: acc, scale: 1}                             # a column logged in percent already
        rows:
          sop_resnet50:                   # row id; by default the experiment row (config `row`) that fills it
            label: "ROADMAP, SOP, ResNet-50"
            published: {R@1: 83.1, mAP@R: null}      # null = MISSING: the paper gives none or it could not be read
            source: pwc                   # overrides the table's source for this row
            note: "..."
            ours: sop_resnet50            # optional: null (published only), a row, a list of rows averaged per
                                          # seed (DyML's three test sets), or {column: row or [rows]}
            params: {score: gl_mcm}       # optional: fills {score} in the columns' metric keys

Values are in the paper's unit (percent for every table here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Column", "Published", "RowSpec", "TableSpec", "load_published"]

_TOP = {"method", "paper", "sources", "notes", "tables"}
_TABLE = {"title", "source", "scale", "columns", "rows", "note"}
_COLUMN = {"name", "metric", "mean_of", "mean_of_columns", "scale"}
_ROW = {"label", "published", "source", "note", "ours", "params"}


class PublishedError(ValueError):
    """A published.yaml that does not have the one shape (the message names the file, the place and the fix)."""


def _check_keys(where: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise PublishedError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)} (see docs/results.md)")


@dataclass(frozen=True)
class Column:
    """One column: a metric key of our records (``metric``), the mean of several keys of the same record
    (``mean_of``), or the mean of other columns of the row (``mean_of_columns``)."""

    name: str
    metric: str | None = None
    mean_of: tuple[str, ...] = ()
    mean_of_columns: tuple[str, ...] = ()
    scale: float | None = None

    def keys(self, params: dict[str, str]) -> tuple[str, ...]:
        """The record metric keys this column reads, with ``{param}`` placeholders filled."""
        keys = (self.metric,) if self.metric else self.mean_of
        return tuple(k.format(**params) for k in keys)


@dataclass
class RowSpec:
    key: str
    label: str
    published: dict[str, float | None]
    source: str | None = None
    note: str | None = None
    ours: Any = "__self__"  # "__self__" = the row key; None = published only; str; list; {column: str | list}
    params: dict[str, str] = field(default_factory=dict)

    def ours_rows(self, column: str | None = None) -> list[str]:
        """The experiment rows whose records fill ``column`` (every column when None); [] for published-only."""
        ours = self.key if self.ours == "__self__" else self.ours
        if isinstance(ours, dict):
            if column is None:
                return []
            ours = ours.get(column)
        if ours is None:
            return []
        return [ours] if isinstance(ours, str) else list(ours)

    def all_rows(self) -> list[str]:
        ours = self.key if self.ours == "__self__" else self.ours
        if isinstance(ours, dict):
            return sorted({r for v in ours.values() for r in ([v] if isinstance(v, str) else v or [])})
        return self.ours_rows()


@dataclass
class TableSpec:
    id: str
    title: str
    source: str | None
    scale: float
    columns: list[Column]
    rows: dict[str, RowSpec]
    note: str | None = None


@dataclass
class Published:
    path: Path
    method: str
    paper: str
    sources: dict[str, str]
    notes: list[str]
    tables: dict[str, TableSpec]

    def cite(self, key: str | None) -> str:
        """The full citation of a source key (the text itself when it is not a key)."""
        if not key:
            return ""
        return self.sources.get(key, key)


def _number_or_none(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PublishedError(f"{where}: a published value must be a number or null (MISSING), got {value!r}")
    return float(value)


def _column(where: str, raw: Any) -> Column:
    if not isinstance(raw, dict) or "name" not in raw:
        raise PublishedError(f"{where}: a column is a mapping with a `name` and one of metric/mean_of/mean_of_columns")
    _check_keys(where, raw, _COLUMN)
    kinds = [k for k in ("metric", "mean_of", "mean_of_columns") if raw.get(k)]
    if len(kinds) != 1:
        raise PublishedError(f"{where}: column {raw['name']!r} needs exactly one of metric/mean_of/mean_of_columns")
    return Column(
        name=str(raw["name"]),
        metric=raw.get("metric"),
        mean_of=tuple(raw.get("mean_of") or ()),
        mean_of_columns=tuple(raw.get("mean_of_columns") or ()),
        scale=None if raw.get("scale") is None else float(raw["scale"]),
    )


def _row(where: str, key: str, raw: Any, columns: list[Column]) -> RowSpec:
    if not isinstance(raw, dict):
        raise PublishedError(f"{where}: a row is a mapping (label, published, source, note, ours, params)")
    _check_keys(where, raw, _ROW)
    names = {c.name for c in columns}
    published = raw.get("published") or {}
    unknown = sorted(set(published) - names)
    if unknown:
        raise PublishedError(f"{where}: published values for unknown column(s) {unknown}; columns: {sorted(names)}")
    ours = raw.get("ours", "__self__")
    if isinstance(ours, dict) and set(ours) - names:
        raise PublishedError(f"{where}: `ours` names unknown column(s) {sorted(set(ours) - names)}")
    return RowSpec(
        key=key,
        label=str(raw.get("label", key)),
        published={c.name: _number_or_none(f"{where}.published.{c.name}", published.get(c.name)) for c in columns},
        source=raw.get("source"),
        note=raw.get("note"),
        ours=ours,
        params={str(k): str(v) for k, v in (raw.get("params") or {}).items()},
    )


def load_published(path: str | Path) -> Published:
    """Read and check one published.yaml (the shape in this module's docstring)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PublishedError(f"{path}: expected a mapping at the top level")
    _check_keys(str(path), data, _TOP)
    for key in ("method", "paper", "tables"):
        if key not in data:
            raise PublishedError(f"{path}: missing top-level key `{key}` (see docs/results.md)")
    sources = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
    tables: dict[str, TableSpec] = {}
    for tid, raw in (data["tables"] or {}).items():
        where = f"{path}: tables.{tid}"
        if not isinstance(raw, dict):
            raise PublishedError(f"{where}: a table is a mapping")
        _check_keys(where, raw, _TABLE)
        columns = [_column(f"{where}.columns[{i}]", c) for i, c in enumerate(raw.get("columns") or [])]
        if not columns:
            raise PublishedError(f"{where}: a table needs `columns`")
        names = [c.name for c in columns]
        for c in columns:
            if set(c.mean_of_columns) - set(names):
                raise PublishedError(f"{where}: column {c.name!r} averages unknown columns")
        rows = {str(k): _row(f"{where}.rows.{k}", str(k), v, columns) for k, v in (raw.get("rows") or {}).items()}
        for r in rows.values():
            for src in (r.source, raw.get("source")):
                if src and " " not in src and src not in sources:
                    raise PublishedError(f"{where}.rows.{r.key}: source key {src!r} is not in `sources`")
        tables[str(tid)] = TableSpec(
            id=str(tid),
            title=str(raw.get("title", tid)),
            source=raw.get("source"),
            scale=float(raw.get("scale", 100.0)),
            columns=columns,
            rows=rows,
            note=raw.get("note"),
        )
    return Published(
        path=path,
        method=str(data["method"]),
        paper=str(data["paper"]),
        sources=sources,
        notes=[str(n) for n in (data.get("notes") or [])],
        tables=tables,
    )
