"""Smoothing: a centred max-pool that spreads a peak onto its neighbours.

With ``within_sentences`` the pool stops at sentence ends: a peak on a name then lends its
score to the rest of its own sentence only, never to the unrelated sentence next door (a
32-token pool reaches one or two whole sentences on each side, which at a RAG budget of a
few hundred tokens is most of what can be kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ...sentences import sentence_index
from .base import RankingContext


def centred_max_pool(scores: np.ndarray, kernel: int) -> np.ndarray:
    """Centred 1-D max-pool that keeps the length: ``out[i] = max(scores[i-k//2 : i+k-k//2])``.

    Smoothing spreads a peak onto its neighbours, so a whole phrase around a strongly
    attended token ranks together instead of as isolated tokens.
    """
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, got {kernel}")
    if kernel == 1 or scores.size == 0:
        return scores.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None, None, :]
    left = kernel // 2
    padded = F.pad(tensor, (left, kernel - 1 - left), value=float("-inf"))
    return F.max_pool1d(padded, kernel_size=kernel, stride=1)[0, 0].numpy()


def bounded_max_pool(scores: np.ndarray, kernel: int, segment: np.ndarray) -> np.ndarray:
    """:func:`centred_max_pool` run separately inside each run of equal ``segment`` values
    (non-decreasing, one per score), so no score crosses from one segment into the next."""
    if kernel == 1 or scores.size == 0:
        return np.asarray(scores).copy()
    bounds = np.flatnonzero(np.diff(segment)) + 1
    return np.concatenate([centred_max_pool(part, kernel) for part in np.split(np.asarray(scores), bounds)])


@dataclass(frozen=True)
class MaxPool:
    """Max-pool every document's scores with ``kernel`` (SpecPC's ``pool_kernel`` and,
    as a second pass, ``neighbourhood``: the tokens around a peak that rank with it).

    The pool runs in float32 (as the draft's scores are), then returns float64 so later
    steps compare exactly.
    """

    kernel: int
    tiebreak: bool = False
    within_sentences: bool = False
    name: ClassVar[str] = "max_pool"

    def apply(self, scores: list[np.ndarray], context: RankingContext) -> list[np.ndarray]:
        if not self.within_sentences:
            return [centred_max_pool(values, self.kernel).astype(np.float64) for values in scores]
        return [
            bounded_max_pool(values, self.kernel, sentence_index(text, tokens.token_anchors)).astype(np.float64)
            for text, tokens, values in zip(context.documents, context.tokens, scores, strict=True)
        ]
