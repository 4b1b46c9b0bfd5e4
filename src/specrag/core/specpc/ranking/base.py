"""What a ranking step is: one transformation of per-token ranking scores.

SpecPC's ranking is a short pipeline (draft attention -> smoothing -> widening -> fusion
with sentence relevance -> sentence snapping), each stage a small object with one method.
A step sees every non-blank document of the call at once, because some (rank fusion) rank
tokens across documents; most work per document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ...segmentation import DocumentTokens


@dataclass(frozen=True)
class RankingContext:
    """What a step may read besides the scores it transforms (all for non-blank documents).

    Attributes
    ----------
    documents
        The documents' text.
    tokens
        Their draft tokens and word units.
    relevance
        Per document, the cosine of each token's sentence to the question (only when an
        embedder is set; see :mod:`specrag.core.embeddings`).
    bridge_relevance
        The same against the question plus the round-1 bridge (only with ``bridge=True``).
    """

    documents: Sequence[str]
    tokens: Sequence[DocumentTokens]
    relevance: Sequence[np.ndarray] | None = None
    bridge_relevance: Sequence[np.ndarray] | None = None


@runtime_checkable
class RankingStep(Protocol):
    """One stage of the ranking pipeline.

    ``apply`` receives one score array per document (same lengths as the documents'
    tokens) and returns new arrays of the same lengths; higher ranks first.
    ``tiebreak`` asks the pipeline to keep this step's output as a secondary key: units
    whose final scores tie are then ordered by it.
    """

    name: ClassVar[str]

    @property
    def tiebreak(self) -> bool: ...

    def apply(self, scores: list[np.ndarray], context: RankingContext) -> list[np.ndarray]: ...
