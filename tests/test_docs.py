"""docs/ names only things that exist, and never cites material that is not in the repository.

Checked in every page of docs/:
- every repository path written in backticks (``common/metrics/ood.py``, ``configs/model/heat.yaml``, a folder ending
  in ``/``, a glob such as ``configs/model/loss/roadmap*.yaml``) exists; ``path.py::name`` also needs ``def name`` or
  ``class name`` in that file;
- every dotted name of a project package (``common.metrics.retrieval.evaluate_retrieval``, ``python -m heat.evaluate``)
  imports and resolves;
- every relative Markdown link points to an existing file, and a ``#section`` to an existing heading;
- no page cites the specification folder or the files in it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PACKAGES = ("common", "roadmap", "happier", "heat", "gallop")
PATH_ROOTS = (*PACKAGES, "configs", "tests", "benchmarks", "mk", "results", "docs")
TOP_FILES = ("Makefile", "pyproject.toml", "README.md")
# Pages linked from docs/README.md that other branches add; drop a name here once its page is merged.
PAGES_FROM_OTHER_BRANCHES: set[str] = set()

SPAN = re.compile(r"`([^`\n]+)`")
_ROOTS, _PKGS = "|".join(PATH_ROOTS), "|".join(PACKAGES)
PATH = re.compile(rf"^(?:{_ROOTS})/[\w./*-]*$")
DOTTED = re.compile(rf"^(?:{_PKGS})(?:\.\w+)+$")
FILE_SUFFIXES = ("py", "yaml", "yml", "md", "json", "mk", "txt")  # `roadmap.yaml` is a file name, not a module
PYTHON_M = re.compile(rf"python -m ((?:{_PKGS})(?:\.\w+)*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)
SPEC_CITATION = re.compile(
    r"(^|[^a-z_])specs?/|/work/|\bspecs? §|heat_gallop\.md|roadmap_happier\.md|published_numbers\.md|ecosystem\.md",
    re.I,
)


def _spans(page: Path) -> list[str]:
    return SPAN.findall(page.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (except - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(page.read_text())}


def _resolve_dotted(name: str) -> object:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def test_the_pages_exist():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    expected = {"README.md", "codebase.md", "metrics.md"} | {
        f"methods/{m}.md" for m in ("roadmap", "happier", "heat", "gallop")
    }
    assert (expected | {"runs.md"}) <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_paths_named_in_docs_exist(page):
    bad = []
    for span in _spans(page):
        target, _, name = span.partition("::")
        if not (PATH.match(target) or target in TOP_FILES) or "<" in target:
            continue
        if "*" in target:
            if not list(ROOT.glob(target)):
                bad.append(f"{span} (no file matches)")
            continue
        path = ROOT / target
        if not path.exists() or (target.endswith("/") and not path.is_dir()):
            bad.append(f"{span} (missing)")
        elif name and not re.search(rf"^\s*(?:def|class) {re.escape(name)}\b", path.read_text(), re.M):
            bad.append(f"{span} (no def/class {name})")
    assert not bad, f"{page.name} names paths that do not exist: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_dotted_names_in_docs_resolve(page):
    names = {s for s in _spans(page) if DOTTED.match(s) and s.rsplit(".", 1)[1] not in FILE_SUFFIXES}
    names |= {m for s in _spans(page) for m in PYTHON_M.findall(s)}
    bad = []
    for name in sorted(names):
        try:
            _resolve_dotted(name)
        except (ImportError, AttributeError) as e:
            bad.append(f"{name} ({type(e).__name__}: {e})")
    assert not bad, f"{page.name} names objects that do not exist: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_links_in_docs_resolve(page):
    bad = []
    for link in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://", link) or link.startswith("mailto:"):
            continue
        target, _, anchor = link.partition("#")
        dest = (page.parent / target).resolve() if target else page
        if not dest.exists():
            if dest.name in PAGES_FROM_OTHER_BRANCHES and dest.parent == DOCS:
                continue
            bad.append(f"{link} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{link} (no heading #{anchor})")
    assert not bad, f"{page.name} has broken links: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_docs_never_cite_the_specification_folder(page):
    hits = [line for line in page.read_text().splitlines() if SPEC_CITATION.search(line)]
    assert not hits, f"{page.name} cites material outside the repository: {hits}"


@pytest.mark.parametrize("method", ["roadmap", "happier", "heat", "gallop"])
def test_method_pages_have_the_required_sections(method):
    anchors = _anchors(DOCS / "methods" / f"{method}.md")
    for section in (
        "formulas",
        "defaults",
        "parity-with-the-original-code",
        "deliberate-differences-from-the-original-code",
        "open-differences-being-fixed",
        "published-numbers-sources",
    ):
        assert section in anchors, f"docs/methods/{method}.md lacks the section #{section}"


def test_the_checks_catch_what_they_should():
    """The patterns above are not vacuous: they match a real path, a real dotted name, and a spec citation."""
    assert PATH.match("common/metrics/ood.py") and not PATH.match("path/to/file.py")
    assert DOTTED.match("common.metrics.ood.ood_metrics") and not DOTTED.match("torch.nn.Module")
    assert not DOTTED.match("roadmap/losses.py")
    assert _resolve_dotted("common.metrics.ood.ood_metrics").__name__ == "ood_metrics"
    with pytest.raises(AttributeError):
        _resolve_dotted("common.metrics.ood.no_such_function")
    assert SPEC_CITATION.search("see specs/heat_gallop.md") and SPEC_CITATION.search("(spec §1.2)")
    assert not SPEC_CITATION.search("docs/codebase.md#label-conventions")
    assert _slug("Open differences (being fixed)") == "open-differences-being-fixed"
