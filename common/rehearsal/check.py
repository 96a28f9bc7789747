"""Every cell of ours filled? Reads the collector's ``tables.json`` and names each empty cell.

A cell of ours is empty when the table has a row that we run (``ours`` is not null in published.yaml) and the cell
has no value: no record of the row (``NO RECORD``), records without the column's key (``not logged``), or a value
that is not a number. Published-only rows (``—``) are not ours and are skipped.

    python -m common.rehearsal.check outputs/rehearsal/tables/tables.json [--method roadmap ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def empty_cells(tables_json: str | Path, methods: list[str] | None = None) -> list[str]:
    """``"<method>/<table> row <row> column <column>: <why>"`` for every empty cell of ours, in table order."""
    path = Path(tables_json)
    if not path.is_file():
        return [f"{path}: no tables.json (did `make tables` run?)"]
    empty = []
    for t in json.loads(path.read_text()):
        if methods is not None and t["method"] not in methods:
            continue
        for row in t["rows"]:
            for column in t["columns"]:
                cell = row["cells"][column]
                if cell["status"] == "not_ours":
                    continue
                if cell["status"] != "ok" or cell["mean"] is None:
                    why = {"no_record": "NO RECORD", "not_logged": "not logged"}.get(cell["status"], "no value")
                    empty.append(f"{t['method']}/{t['id']} row {row['key']} column {column}: {why}")
    return empty


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables_json")
    p.add_argument("--method", action="append", help="only these methods (repeatable)")
    args = p.parse_args(argv)
    empty = empty_cells(args.tables_json, args.method)
    if empty:
        sys.exit(f"{len(empty)} empty cell(s) of ours:\n  " + "\n  ".join(empty))
    print(f"{args.tables_json}: every cell of ours is filled")


if __name__ == "__main__":
    main()
