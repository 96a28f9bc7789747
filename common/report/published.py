"""Render a method's ``results/<method>/published.yaml`` (the papers' numbers, never ours) as Markdown.

The four files grew different shapes; all are read here:

* column tables: ``<table>: {columns: [...], <row>: [values]}`` (GalLoP's README tables);
* records: a list of ``{dataset, model, metric, value, status, source}`` (HAPPIER);
* per-row dicts: ``<group>: {<row>: {<metric>: value | missing, source: <key>}}`` with a top-level ``sources``
  mapping keys to references (ROADMAP);
* anything else (HEAT: every table ``missing``) is summarised by its count of missing cells.

Found values become one table (row, metric, value, source); every ``missing`` cell is counted, never filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["published_md"]

_META = {"source", "sources", "note", "notes", "context", "status", "experiment", "paper", "rule", "missing"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count_missing(node: Any) -> int:
    if isinstance(node, str):
        return int(node.strip().lower().startswith("missing"))
    if isinstance(node, dict):
        return sum(_count_missing(v) for k, v in node.items() if k not in ("source", "sources", "notes", "rule"))
    if isinstance(node, list):
        return sum(_count_missing(v) for v in node)
    return 0


def _records(data: dict, sources: dict) -> list[tuple[str, str, str, str]]:
    """``(row, metric, value, source)`` for every number found in the non-column parts of the file."""
    rows: list[tuple[str, str, str, str]] = []

    def source_of(node: dict, inherited: str) -> str:
        src = node.get("source", inherited)
        return str(sources.get(src, src)) if isinstance(src, str) else inherited

    def walk(node: Any, path: list[str], inherited: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path, inherited)
            return
        if not isinstance(node, dict):
            return
        src = source_of(node, inherited)
        if "metric" in node and "value" in node:  # a record
            if _is_number(node["value"]):
                name = " / ".join(str(node[k]) for k in ("dataset", "model") if node.get(k) is not None)
                rows.append((name or " / ".join(path), str(node["metric"]), str(node["value"]), src))
            return
        if isinstance(node.get("columns"), list):  # rendered as its own table
            return
        for key, value in node.items():
            if key in _META or "recipe" in str(key):  # training recipes are context, not results
                continue
            if _is_number(value):
                rows.append((" / ".join(path) or "-", str(key), str(value), src))
            else:
                walk(value, [*path, str(key)], src)

    walk({k: v for k, v in data.items() if k not in ("sources",)}, [], str(data.get("source", "")))
    return rows


def _column_tables(data: dict) -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("columns"), list):
            cols = value["columns"]
            lines += [f"**{key}**", "", "| method | " + " | ".join(map(str, cols)) + " |"]
            lines.append("|---" * (len(cols) + 1) + "|")
            for row, vals in value.items():
                if row != "columns" and isinstance(vals, list):
                    lines.append(f"| {row} | " + " | ".join("" if v is None else str(v) for v in vals) + " |")
            lines.append("")
    return lines


def published_md(path: Path, root: Path | None = None) -> str:
    """Markdown for one ``published.yaml``: its source line, column tables, a table of the other found values,
    and the number of cells marked missing."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    shown = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
    lines = [f"From `{shown}` (every value with its source; the file also holds notes).", ""]
    if isinstance(data.get("source"), str):
        lines += [f"Source: {data['source']}", ""]
    lines += _column_tables(data)
    records = _records(data, data.get("sources") or {})
    if records:
        refs: dict[str, int] = {}  # source text -> footnote number
        lines += ["| row | metric | published | source |", "|---|---|---:|---|"]
        for r, m, v, src in records:
            ref = f"[{refs.setdefault(src, len(refs) + 1)}]" if src else "-"
            lines.append(f"| {r} | {m} | {v} | {ref} |")
        lines += ["", "Sources:", ""] + [f"- [{i}] {src}" for src, i in refs.items()] + [""]
    missing = _count_missing({k: v for k, v in data.items() if k != "missing"})
    if missing:
        lines += [
            f"{missing} published cell{'s' if missing > 1 else ''} could not be read from any source and "
            f"{'are' if missing > 1 else 'is'} marked `missing` in the file "
            "(never guessed).",
            "",
        ]
    if not records and not _column_tables(data):
        lines += ["No published number could be read for this method yet.", ""]
    return "\n".join(lines)
