"""StreamingLLM eviction: attention sinks plus the most recent entries.

Xiao et al. 2023 ("Efficient Streaming Language Models with Attention Sinks"): the first
tokens of a sequence soak up attention mass that has nowhere else to go; keeping them plus
a recent window keeps decoding stable at zero scoring cost. A baseline: it forgets the
middle of the prompt, where RAG answers usually are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..attention_scores import sink_and_recent_indices
from .base import EntryScorer, EvictionPolicy


@dataclass(frozen=True)
class StreamingLLM(EvictionPolicy):
    """Keep the first ``sink_tokens`` entries and the most recent ``keep - sink_tokens``.

    Reads no attention and runs no draft. Every KV head keeps the same positions. With
    ``rescore_every``, decoding cuts back to sinks + most recent (a rolling window); eviction
    keeps entries in sequence order, so the first entries are still the prompt's first.

    Parameters
    ----------
    sink_tokens
        Leading entries always kept (StreamingLLM uses 4). Must be smaller than the entries
        kept after eviction.
    """

    sink_tokens: int = 4

    name: ClassVar[str] = "streaming"

    def __post_init__(self) -> None:
        value = self.sink_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"sink_tokens must be an int >= 0, got {value!r}")

    def check_keep(self, keep: int, described: str = "budget") -> None:
        if self.sink_tokens >= keep:
            raise ValueError(
                f"sink_tokens ({self.sink_tokens}) must be smaller than the entries kept after "
                f"eviction ({described} = {keep}): policy='streaming' keeps the sinks plus at "
                "least one recent entry"
            )

    def select(
        self, layer: int, keys: torch.Tensor, keep: int, window: int, observer: EntryScorer | None
    ) -> torch.Tensor:
        batch, kv_heads, entries = keys.shape[0], keys.shape[1], keys.shape[2]
        return sink_and_recent_indices(
            entries, keep, self.sink_tokens, batch=batch, kv_heads=kv_heads, device=keys.device
        )
