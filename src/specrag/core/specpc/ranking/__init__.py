"""SpecPC's ranking: per-token draft attention turned into the keys units are ranked by.

A pipeline of :class:`RankingStep` objects, built from the settings by :func:`build_steps`:

1. :class:`MaxPool` (``pool_kernel``): smoothing; its output is also the first tie-break.
2. :class:`MaxPool` (``neighbourhood``): widening, so the tokens around a peak rank with it.
   Both stay inside sentences with ``pool_scope="sentence"``.
3. :class:`FuseRelevance` (``relevance_weight``): fusion with sentence relevance, only when
   an embedder is set.
4. :class:`SnapToSentences`: with ``snap="sentence"``.

:func:`rank_tokens` runs it. A new step is one class with ``apply`` (see
``CONTRIBUTING.md``), added to :func:`build_steps` behind a setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .base import RankingContext, RankingStep
from .fusion import FuseRelevance, fuse_ranks, max_ranks, percentile_ranks
from .smoothing import MaxPool, bounded_max_pool, centred_max_pool
from .snapping import SnapToSentences, snap_to_sentences

if TYPE_CHECKING:
    from ..settings import SpecPCSettings

TokenKeys = tuple[np.ndarray, ...]
"""Per-token ranking keys of one document, most significant first."""


def build_steps(settings: SpecPCSettings, *, fused: bool) -> tuple[RankingStep, ...]:
    """The pipeline the settings describe (``fused``: the call carries sentence relevance)."""
    within = settings.pool_scope == "sentence"
    steps: list[RankingStep] = [
        MaxPool(settings.pool_kernel, tiebreak=True, within_sentences=within),
        MaxPool(settings.neighbourhood, within_sentences=within),
    ]
    if fused:
        steps.append(FuseRelevance(settings.relevance_weight, mode=settings.fusion))
    if settings.snap == "sentence":
        steps.append(SnapToSentences())
    return tuple(steps)


def rank_tokens(raw: Sequence[np.ndarray], steps: Sequence[RankingStep], context: RankingContext) -> list[TokenKeys]:
    """Run ``steps`` over the raw draft scores of every document.

    Returns, per document, ``(final, *tie-break outputs newest first, raw)``: units are
    ordered by the final scores, ties broken by the outputs of steps marked ``tiebreak``,
    then by the raw attention (then by position, in selection).
    """
    originals = [np.asarray(values, dtype=np.float64) for values in raw]
    current = originals
    tiebreaks: list[list[np.ndarray]] = []
    for step in steps:
        current = step.apply(current, context)
        if step.tiebreak:
            tiebreaks.insert(0, current)
    return [(current[index], *(keys[index] for keys in tiebreaks), originals[index]) for index in range(len(current))]


__all__ = [
    "FuseRelevance",
    "MaxPool",
    "RankingContext",
    "RankingStep",
    "SnapToSentences",
    "TokenKeys",
    "bounded_max_pool",
    "build_steps",
    "centred_max_pool",
    "fuse_ranks",
    "max_ranks",
    "percentile_ranks",
    "rank_tokens",
    "snap_to_sentences",
]
