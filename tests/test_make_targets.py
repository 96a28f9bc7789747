"""Every `make <target>` that the repo tells a user to run exists: the targets named in code (error messages,
docstrings, ``make_target=``/``MAKE_TARGET``), in READMEs and docs/, in configs and makefiles must all be listed by
`make help` (a pattern rule such as ``sweep-%`` covers its instances)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

NAMED = [
    re.compile(r"`make ([a-z][a-z0-9_-]*)"),  # `make data-sop` in prose, docstrings and messages
    re.compile(r"""make_target=f?["']([a-z][a-z0-9_-]*)["']"""),  # require_path(..., make_target="data-sop")
    re.compile(r"""MAKE_TARGET = ["']([a-z][a-z0-9_-]*)["']"""),
    re.compile(r"#\s*make ([a-z][a-z0-9_-]*)"),  # YAML / makefile comments: # make weights-timm NAME=...
]
SUFFIXES = (".py", ".md", ".mk", ".yaml", ".yml")


def _repo_files() -> list:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / f for f in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if not any(x in p.parts for x in (".venv", ".git", "data", "logs"))]
    return [f for f in files if f.is_file() and (f.suffix in SUFFIXES or f.name == "Makefile")]


def named_targets() -> dict[str, set[str]]:
    """``{target: {files naming it}}``; prefixes such as `make table-` (ending in ``-``) are left out."""
    found: dict[str, set[str]] = {}
    for f in _repo_files():
        text = f.read_text(errors="replace")
        for rx in NAMED:
            for name in rx.findall(text):
                if not name.endswith("-"):
                    found.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    return found


@functools.cache
def help_targets() -> tuple[str, ...]:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return tuple(re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in out.splitlines() if line.strip())


def _covered(name: str, targets) -> bool:
    return any(name == t or ("%" in t and re.fullmatch(re.escape(t).replace("%", ".+"), name)) for t in targets)


def test_every_named_make_target_is_in_make_help():
    targets = help_targets()
    named = named_targets()
    assert {"data-sop", "data-fashion-mnist", "weights-timm", "weights-clip"} <= set(named)  # the scan sees them
    missing = {n: sorted(files) for n, files in named.items() if not _covered(n, targets)}
    assert not missing, f"make targets named in the repo but absent from `make help`: {missing}"


def test_the_scan_catches_a_missing_target():
    assert not _covered("data-nowhere", help_targets())
    assert _covered("sweep-demo_seeds", ["sweep-%"]) and not _covered("sweep", ["sweep-%"])
    assert NAMED[0].findall("run `make data-inshop` first") == ["data-inshop"]
    assert NAMED[1].findall('require_path(p, make_target="data-dtd")') == ["data-dtd"]


def test_make_help_lists_each_target_once():
    targets = help_targets()
    assert len(targets) == len(set(targets)), sorted(t for t in targets if targets.count(t) > 1)
