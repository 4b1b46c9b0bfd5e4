"""What one SpecKV generation returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..specpc.result import CompressionResult

FinishReason = Literal["eos", "stop", "length"]


class SpecKVResult(BaseModel):
    """What one generation produced and what it cost.

    ``token_ids`` are the generated target tokens, including the EOS or the token that
    completed a stop string; ``text`` excludes special tokens and anything from a stop
    string on. Cache figures count entries per layer: one entry is one position's key and
    value for all KV heads of that layer.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    token_ids: list[int]
    finish_reason: FinishReason = Field(description="'eos', 'stop' (a stop string) or 'length'.")
    prompt_tokens: int = Field(description="Target tokens of the prompt (after compression).")
    lookahead_tokens: int = Field(description="Draft-answer tokens (target ids) that scored.")
    draft_answer: str = Field(
        "",
        description="The draft's approximate answer that scored the cache, as the target's "
        "tokens decoded ('' when no draft ran). Read it when an evicted answer goes wrong: "
        "a draft that cannot answer the question scores the cache with noise.",
    )
    budget: int
    evicted: bool = Field(description="Whether the prefill was evicted (prompt > budget).")
    budgeted_layers: list[int] = Field(description="Layers whose cache is kept to the budget.")
    prefill_cache_entries: list[int] = Field(description="Entries per layer after prefill eviction.")
    cache_entries: list[int] = Field(description="Entries per layer at the end.")
    peak_decode_entries: int = Field(
        description="Most entries any budgeted layer held during a decode step (0 if none ran)."
    )
    rescores: int = Field(description="Evictions during decoding (re-scoring mode).")
    kv_bytes: int = Field(description="Bytes of keys and values held at the end.")
    full_kv_bytes: int = Field(description="Bytes a full (never evicted) cache would hold then.")
    draft_seconds: float = Field(description="The draft writing its answer (0 if none ran).")
    draft_overlapped: bool = Field(
        False, description="Whether the draft ran beside the target's prefill (``overlap_draft``)."
    )
    prefill_seconds: float = Field(
        description="Target prefill, scoring forward and eviction; with an overlapped draft, "
        "also any wait for the draft's answer."
    )
    decode_seconds: float
    decode_tokens_per_second: float = Field(description="Decode forwards per second.")
    compression: CompressionResult | None = Field(
        None, description="SpecPC's result when documents were compressed first."
    )

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def time_to_first_token(self) -> float:
        """Seconds until the first answer token: compression, then the draft and the prefill,
        which count once where they overlapped (the prefill then spans the draft)."""
        compression = self.compression.seconds if self.compression is not None else 0.0
        draft = 0.0 if self.draft_overlapped else self.draft_seconds
        return compression + draft + self.prefill_seconds
