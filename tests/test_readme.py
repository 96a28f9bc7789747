"""The README's first screen shows the demo's numbers as produced: they must match results/demo/*.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from common.demo import headline

ROOT = Path(__file__).resolve().parents[1]


def _block(text: str) -> str:
    match = re.search(r"<!-- demo-headline:start -->\n(.*?)\n<!-- demo-headline:end -->", text, re.S)
    assert match, "README.md lost its <!-- demo-headline:start/end --> block"
    return match.group(1)


def test_readme_headline_matches_the_committed_demo_results() -> None:
    assert _block((ROOT / "README.md").read_text()) == headline(ROOT / "results" / "demo"), (
        "README's demo table is out of date: paste `python -c 'from pathlib import Path; from common.demo import "
        'headline; print(headline(Path("results/demo")))\'` between the demo-headline markers'
    )


def test_headline_reads_each_method_and_says_when_a_claim_fails(tmp_path: Path) -> None:
    (tmp_path / "roadmap.json").write_text(
        json.dumps(
            {
                "runs": {
                    "roadmap": {"test/map@r": 0.30},
                    "roadmap_smoothap": {"test/map@r": 0.35},
                    "roadmap_triplet": {"test/map@r": 0.25},
                }
            }
        )
    )
    (tmp_path / "happier.json").write_text(
        json.dumps(
            {
                "runs": {
                    "HAPPIER": {"metrics": {"test/hap": 0.70, "test/asi": 0.60}},
                    "ROADMAP": {"metrics": {"test/hap": 0.72, "test/asi": 0.55}},
                }
            }
        )
    )
    rows = headline(tmp_path).splitlines()
    assert len(rows) == 4  # header, rule, two methods (no heat/gallop json)
    assert "ROADMAP 0.300" in rows[2] and "Smooth-AP 0.350" in rows[2] and "behind (-0.050" in rows[2]
    assert "HAPPIER 70.0 / 60.0" in rows[3] and "claim does NOT hold" in rows[3]
