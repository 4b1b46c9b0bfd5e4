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
from collections.abc import Callable, Sequence

import numpy as np

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Texts -> one unit-length vector per row (dot product = cosine similarity)."""

_SENTENCE = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+|\n|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character ``[start, end)`` of each sentence: runs ending in ``.!?`` (also CJK full
    stops) or a newline. Text without any such mark is one sentence; blank runs are skipped."""
    found = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]
    return found or ([(0, len(text))] if text else [])


def sentence_index(text: str, char_starts: np.ndarray) -> np.ndarray:
    """Index (into :func:`sentence_spans`) of the sentence each character offset falls in;
    offsets before the first sentence (leading blanks) get 0."""
    return _index_in(sentence_spans(text), char_starts)


def _index_in(spans: list[tuple[int, int]], char_starts: np.ndarray) -> np.ndarray:
    if not spans:
        return np.zeros(len(char_starts), dtype=np.int64)
    starts = np.array([start for start, _ in spans])
    return np.clip(np.searchsorted(starts, char_starts, side="right") - 1, 0, len(spans) - 1)


def sentence_relevance(
    embed: Embedder, question: str, documents: Sequence[str], char_starts: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per document, the cosine to ``question`` of the sentence each offset in
    ``char_starts[i]`` falls in; blank documents get zeros. One ``embed`` call for all
    sentences of all documents, the question first.

    Raises
    ------
    ValueError
        If ``embed`` returns another number of vectors than it was given texts.
    """
    spans = [sentence_spans(text) if text.strip() else [] for text in documents]
    sentences = [text[start:end].strip() for text, doc_spans in zip(documents, spans) for start, end in doc_spans]
    if not sentences:
        return [np.zeros(len(starts)) for starts in char_starts]
    vectors = np.asarray(embed([question, *sentences]), dtype=np.float64)
    if vectors.shape[0] != len(sentences) + 1:
        raise ValueError(f"embedder returned {vectors.shape[0]} vectors for {len(sentences) + 1} texts")
    similarity = vectors[1:] @ vectors[0]
    out, cursor = [], 0
    for doc_spans, starts in zip(spans, char_starts):
        out.append(similarity[cursor + _index_in(doc_spans, starts)] if doc_spans else np.zeros(len(starts)))
        cursor += len(doc_spans)
    return out


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
