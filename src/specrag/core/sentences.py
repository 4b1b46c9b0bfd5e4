"""Sentence boundaries, the one definition every sentence-level step shares.

Sentence snapping, embedding relevance and the benchmark's sentence filter must agree on
where a sentence starts and ends, or a "sentence" kept by one would be cut by another.
"""

from __future__ import annotations

import re

import numpy as np

_SENTENCE = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+|\n|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character ``[start, end)`` of each sentence: runs ending in ``.!?`` (also CJK full
    stops) or a newline. Text without any such mark is one sentence; blank runs are skipped."""
    found = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]
    return found or ([(0, len(text))] if text else [])


def sentence_index(text: str, char_starts: np.ndarray) -> np.ndarray:
    """Index (into :func:`sentence_spans`) of the sentence each character offset falls in;
    offsets before the first sentence (leading blanks) get 0."""
    return index_in_spans(sentence_spans(text), char_starts)


def index_in_spans(spans: list[tuple[int, int]], char_starts: np.ndarray) -> np.ndarray:
    """Index of the span each offset falls in (spans sorted, offsets before the first: 0)."""
    if not spans:
        return np.zeros(len(char_starts), dtype=np.int64)
    starts = np.array([start for start, _ in spans])
    return np.clip(np.searchsorted(starts, char_starts, side="right") - 1, 0, len(spans) - 1)
