"""Sentence snapping: every token ranks with its sentence's best score.

Attention picks tokens; a reader (and an answering LLM) needs clauses. Giving every token
of a sentence its sentence's best score keeps sentences whole where the budget allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...sentences import sentence_index
from .base import RankingContext


def snap_to_sentences(text: str, char_starts: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Every item (token or unit, located by its first character) takes the highest score
    in its sentence."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    which = sentence_index(text, char_starts)
    best = np.full(int(which.max()) + 1, -np.inf)
    np.maximum.at(best, which, scores)
    return np.asarray(best[which])


@dataclass(frozen=True)
class SnapToSentences:
    """Apply :func:`snap_to_sentences` to every document (``snap="sentence"``)."""

    tiebreak: bool = False
    name: ClassVar[str] = "snap_to_sentences"

    def apply(self, scores: list[np.ndarray], context: RankingContext) -> list[np.ndarray]:
        return [
            snap_to_sentences(text, tokens.token_anchors, values)
            for text, tokens, values in zip(context.documents, context.tokens, scores, strict=True)
        ]
