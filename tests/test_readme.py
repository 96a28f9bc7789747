"""The README's first screen shows the committed reference run's numbers: they must match results/reference/*.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from common.demo import REFERENCE, headline

ROOT = Path(__file__).resolve().parents[1]


def _block(text: str) -> str:
    match = re.search(r"<!-- demo-headline:start -->\n(.*?)\n<!-- demo-headline:end -->", text, re.S)
    assert match, "README.md lost its <!-- demo-headline:start/end --> block"
    return match.group(1)


def test_readme_headline_matches_the_reference_run() -> None:
    assert REFERENCE == ROOT / "results" / "reference" and (REFERENCE / "COMMAND.md").is_file()
    assert _block((ROOT / "README.md").read_text()) == headline(REFERENCE), (
        "README's demo table is out of date: paste `python -c 'from common.demo import REFERENCE, headline; "
        "print(headline(REFERENCE))'` between the demo-headline markers"
    )


def test_readme_claims_no_identical_numbers_across_runs() -> None:
    text = (ROOT / "README.md").read_text().lower()
    for phrase in ("same numbers", "identical numbers", "bit-identical numbers on", "reproduces exactly"):
        assert phrase not in text, phrase


def test_headline_has_a_line_per_method_json_in_method_order(tmp_path: Path) -> None:
    line = {"task": "T", "metric": "m", "ours": "o", "baselines": "b", "verdict": "v"}
    (tmp_path / "heat.json").write_text(json.dumps({"headline": {**line, "task": "OOD"}}))
    (tmp_path / "roadmap.json").write_text(json.dumps({"headline": {**line, "task": "Retrieval"}}))
    (tmp_path / "gallop.json").write_text(json.dumps({"runs": {}}))  # no headline: no line
    rows = headline(tmp_path).splitlines()
    assert rows[:2] == ["| task | metric | ours | baselines | verdict |", "|---|---|---|---|---|"]
    assert rows[2:] == ["| Retrieval | m | o | b | v |", "| OOD | m | o | b | v |"]
