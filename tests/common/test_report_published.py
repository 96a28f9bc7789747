"""The report's rendering of published.yaml: every found number with its source, missing cells counted."""

from __future__ import annotations

from pathlib import Path

from common.report.published import published_md


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "published.yaml"
    path.write_text(text)
    return path


def test_per_row_dicts_resolve_source_keys_and_count_missing(tmp_path: Path) -> None:
    md = published_md(
        _write(
            tmp_path,
            "sources:\n  pwc: 'https://example.org/roadmap (3rd-party)'\n"
            "paper2021:\n  sop_resnet50: {recall@1: 83.1, map@r: missing, source: pwc}\n"
            "  cub_resnet50: {recall@1: missing, map@r: missing}\n"
            "recipes:\n  training_recipe: {epochs: 20}\n",
        )
    )
    assert "| paper2021 / sop_resnet50 | recall@1 | 83.1 | [1] |" in md
    assert "- [1] https://example.org/roadmap (3rd-party)" in md
    assert "3 published cells" in md and "epochs" not in md  # recipes are context, not results


def test_records_and_column_tables(tmp_path: Path) -> None:
    md = published_md(
        _write(
            tmp_path,
            "numbers:\n- {dataset: SOP, model: HAPPIER, metric: R@1, value: 81.0, status: found, source: pwc}\n"
            "- {dataset: SOP, model: HAPPIER, metric: H-AP, value: null, status: missing, source: missing}\n"
            "few_shot:\n  columns: [imagenet, average]\n  GalLoP: [75.1, 84.4]\n",
        )
    )
    assert "| SOP / HAPPIER | R@1 | 81.0 | [1] |" in md and "H-AP" not in md
    assert "| GalLoP | 75.1 | 84.4 |" in md
    assert "1 published cell could not" in md  # the missing record


def test_nothing_found_is_said(tmp_path: Path) -> None:
    md = published_md(_write(tmp_path, "cifar10:\n  fpr95: missing\n  auroc: missing\n"))
    assert "No published number could be read" in md and "2 published cells" in md
