"""SnapKV-style eviction: the prompt's last ``window`` queries score the cache.

Li et al. 2024 ("SnapKV: LLM Knows What You are Looking for Before Generation"): the
attention the end of the prompt (the question) pays to earlier entries predicts what
generation will need. No draft: the target's own queries score, during its prefill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..attention_scores import DraftGuidedScores, RecentQueries, Reduction
from .base import EntryScorer, Phase, ScoredPolicy


@dataclass(frozen=True)
class SnapKV(ScoredPolicy):
    """Keep the entries the last ``window`` prompt queries attend to most.

    Parameters
    ----------
    pool_kernel
        Centred max-pool width smoothing scores (reference: 7).
    reduction
        How the query heads of one KV group and the queries reduce to one score per entry:
        ``"max"`` (the reference's) or ``"mean"``.
    query_chunk
        Queries scored at once (bounds memory: ``heads x chunk x entries``).
    """

    pool_kernel: int = 7
    reduction: Reduction = "max"
    query_chunk: int = 16

    name: ClassVar[str] = "snapkv"

    def __post_init__(self) -> None:
        for field in ("pool_kernel", "query_chunk"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")
        if self.reduction not in ("max", "mean"):
            raise ValueError(f"reduction must be 'max' or 'mean', got {self.reduction!r}")

    def observer(self, phase: Phase, *, prompt_length: int, window: int, layers: frozenset[int]) -> EntryScorer:
        if phase == "prefill":
            return DraftGuidedScores(prompt_length, window, layers, self.reduction, self.query_chunk)
        return RecentQueries(window, layers, self.reduction, self.query_chunk)

    def entry_scores(self, layer: int, keys: torch.Tensor, observer: EntryScorer | None) -> torch.Tensor:
        if observer is None:
            raise RuntimeError(f"policy {self.name!r} scores with attention, but no observer ran")
        return observer.scores(layer, keys)
