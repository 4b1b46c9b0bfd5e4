"""Combine relevance signals over word units: rank fusion and sentence snapping.

Why ranks, not raw scores
-------------------------
Draft attention and embedding cosine live on unrelated scales (attention mass per token is
heavy-tailed and depends on the draft and the length; cosine sits in a narrow band around
0.2-0.6), so adding raw values lets one signal drown the other. Each signal is turned into
its percentile rank over all units of the call instead, which is scale-free and keeps the
ranking each signal would make on its own; a weighted sum of percentiles then ranks units
by agreement between signals.

Why whole sentences
-------------------
Attention picks tokens; a reader (and an answering LLM) needs clauses. Giving every unit
of a sentence its sentence's best score keeps sentences whole where the budget allows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
    spans = sentence_spans(text)
    if not spans:
        return np.zeros(len(char_starts), dtype=np.int64)
    starts = np.array([start for start, _ in spans])
    return np.clip(np.searchsorted(starts, char_starts, side="right") - 1, 0, len(spans) - 1)


def snap_to_sentences(text: str, char_starts: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Every item (token or unit, located by its first character) takes the highest score
    in its sentence."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    which = sentence_index(text, char_starts)
    best = np.full(int(which.max()) + 1, -np.inf)
    np.maximum.at(best, which, scores)
    return best[which]


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Rank of each value in ``[0, 1]`` (ties share their mean rank); one value gets 1."""
    values = np.asarray(values, dtype=np.float64)
    if values.size <= 1:
        return np.ones_like(values)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    # Average ranks over ties, so equal scores stay equal after fusion.
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.size < values.size:
        sums = np.zeros(unique.size)
        counts = np.zeros(unique.size)
        np.add.at(sums, inverse, ranks)
        np.add.at(counts, inverse, 1.0)
        ranks = (sums / counts)[inverse]
    return ranks / (values.size - 1)


def fuse_ranks(signals: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """Weighted sum of percentile ranks, each signal ranked over all documents' units.

    Parameters
    ----------
    signals
        Per signal, one score array per document (the same shapes for every signal).
    weights
        One non-negative weight per signal.
    """
    if len(signals) != len(weights) or not signals:
        raise ValueError(f"need one weight per signal, got {len(signals)} signals and {len(weights)} weights")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative, got {list(weights)}")
    sizes = [np.asarray(doc).size for doc in signals[0]]
    for signal in signals[1:]:
        if [np.asarray(doc).size for doc in signal] != sizes:
            raise ValueError("every signal needs one score per unit of every document")
    total = np.zeros(sum(sizes))
    for signal, weight in zip(signals, weights):
        flat = np.concatenate([np.asarray(doc, dtype=np.float64) for doc in signal]) if sizes else np.zeros(0)
        total += weight * percentile_ranks(flat)
    return np.split(total, np.cumsum(sizes)[:-1]) if sizes else []
