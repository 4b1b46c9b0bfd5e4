"""Show what SpecPC kept: highlighted terminal text (rich) and a standalone HTML page.

Both views walk the original documents and mark each character range as kept or dropped
using the result's spans, so what is shown is exactly what the target model will read.
"""

from __future__ import annotations

import html
from collections.abc import Iterator

from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from .core.specpc import CompressedDocument, CompressionResult


def segments(document: CompressedDocument) -> Iterator[tuple[str, bool]]:
    """Yield ``(text, kept)`` pieces covering the whole original document in order."""
    cursor = 0
    for start, end in document.spans:
        if start > cursor:
            yield document.original[cursor:start], False
        yield document.original[start:end], True
        cursor = end
    if cursor < len(document.original):
        yield document.original[cursor:], False


def _title(document: CompressedDocument) -> str:
    return (
        f"document {document.index}: kept {document.kept_tokens}/{document.original_tokens} "
        f"tokens, relevance {document.relevance:.3f}"
    )


def summary_line(result: CompressionResult) -> str:
    """One line with the figures a user checks first."""
    return (
        f"{result.kept_tokens}/{result.original_tokens} {result.counted_in} kept "
        f"({result.kept_fraction:.0%}, budget {result.budget}) across {len(result.documents)} "
        f"documents in {result.seconds:.2f}s with {result.draft}"
    )


def to_rich(result: CompressionResult) -> Group:
    """Kept text in bold green, dropped text dimmed, one panel per document."""
    panels = []
    for document in result.documents:
        body = Text()
        for piece, kept in segments(document):
            body.append(piece, style="bold green" if kept else "dim strike")
        panels.append(Panel(body, title=_title(document), title_align="left"))
    return Group(*panels, Text(summary_line(result), style="bold"))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>specrag: what SpecPC kept</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; line-height: 1.5; }}
.doc {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; white-space: pre-wrap; }}
.doc h2 {{ font-size: 0.95rem; margin: 0 0 0.5rem; color: #333; white-space: normal; }}
.kept {{ background: #c8f7c5; }}
.dropped {{ color: #999; }}
.question {{ font-weight: bold; }}
</style></head><body>
<h1>What SpecPC kept</h1>
<p class="question">Question: {question}</p>
<p>{summary}</p>
{documents}
<p><span class="kept">highlighted</span> text is kept verbatim; <span class="dropped">grey</span> text is dropped.</p>
</body></html>
"""


def to_html(result: CompressionResult) -> str:
    """A self-contained page (no scripts, no external assets) with kept text highlighted."""
    blocks = []
    for document in result.documents:
        inner = "".join(
            f'<span class="{"kept" if kept else "dropped"}">{html.escape(piece)}</span>'
            for piece, kept in segments(document)
        )
        blocks.append(f'<div class="doc"><h2>{html.escape(_title(document))}</h2>{inner}</div>')
    return _PAGE.format(
        question=html.escape(result.question),
        summary=html.escape(summary_line(result)),
        documents="\n".join(blocks),
    )
