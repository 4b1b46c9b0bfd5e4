"""Rank fusion: combine draft attention with sentence-to-question relevance.

Why ranks, not raw scores
-------------------------
Draft attention and embedding cosine live on unrelated scales (attention mass per token is
heavy-tailed and depends on the draft and the length; cosine sits in a narrow band around
0.2-0.6), so adding raw values lets one signal drown the other. Each signal is turned into
its percentile rank over all tokens of the call instead, which is scale-free and keeps the
ranking each signal would make on its own; a weighted sum of percentiles then ranks tokens
by agreement between signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from .base import RankingContext


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
    for signal, weight in zip(signals, weights, strict=True):
        flat = np.concatenate([np.asarray(doc, dtype=np.float64) for doc in signal]) if sizes else np.zeros(0)
        total += weight * percentile_ranks(flat)
    return np.split(total, np.cumsum(sizes)[:-1]) if sizes else []


def max_ranks(signals: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per unit, the best of its percentile ranks, each signal ranked over all documents.

    Where a weighted sum rewards units that *both* signals like, the max keeps each signal's
    own top picks on top: a budget is then shared between what the draft attends to and what
    resembles the question, instead of going to whichever signal the weights favour.
    """
    ranked = [fuse_ranks([signal], [1.0]) for signal in signals]
    return [np.maximum.reduce([r[index] for r in ranked]) for index in range(len(ranked[0]))] if ranked else []


@dataclass(frozen=True)
class FuseRelevance:
    """Combine the scores with sentence relevance, as percentile ranks.

    ``mode="sum"``: ``rank(scores) + weight * rank(relevance)``; ``mode="max"``:
    ``max(rank(scores), rank(relevance))`` (see :func:`max_ranks`). With a bridge round the
    bridge relevance is a third signal, treated like the first relevance. A no-op when the call
    has no relevance (no embedder set), so the same pipeline serves both.
    """

    weight: float
    mode: Literal["sum", "max"] = "sum"
    tiebreak: bool = False
    name: ClassVar[str] = "fuse_relevance"

    def apply(self, scores: list[np.ndarray], context: RankingContext) -> list[np.ndarray]:
        if context.relevance is None or not scores:
            return scores
        signals = [scores, list(context.relevance)]
        if context.bridge_relevance is not None:
            signals.append(list(context.bridge_relevance))
        if self.mode == "max":
            return max_ranks(signals)
        return fuse_ranks(signals, [1.0] + [self.weight] * (len(signals) - 1))
