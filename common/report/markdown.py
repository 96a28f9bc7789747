"""Markdown to HTML for the report, with markdown-it-py (CommonMark plus pipe tables).

Raw HTML in the Markdown is kept (the report places ``<a id="..."></a>`` anchors before the tables so that the
summary's links work in the HTML page and on GitHub alike).
"""

from __future__ import annotations

from markdown_it import MarkdownIt

__all__ = ["to_html"]

_MD = MarkdownIt("commonmark", {"html": True}).enable("table")


def to_html(md: str) -> str:
    """The HTML body of a Markdown text."""
    return _MD.render(md)
