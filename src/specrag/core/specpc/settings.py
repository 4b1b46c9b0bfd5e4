"""SpecPC's settings: one validated, frozen pydantic model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SpecPCSettings(BaseModel):
    """Knobs of SpecPC. Defaults are the measured ones documented in ``docs/tuning.md``.

    Unknown names are rejected (``extra="forbid"``): a misspelt setting must not silently
    fall back to its default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(64, ge=1, description="Last prompt tokens whose attention scores.")
    lookahead: int = Field(1, ge=1, description="Draft tokens whose queries score; 1 = the prefill only.")
    start_layer: int | None = Field(None, ge=0, description="First scored layer; None = a third of the draft's depth.")
    draft_layers: int | None = Field(
        None,
        ge=1,
        description="Run the draft only through its first this many layers (scoring those from "
        "start_layer on); SpecPC needs no logits, so the rest of the forward is skipped. None = "
        "all layers. Needs lookahead=1: lookahead tokens come from the full model's logits.",
    )
    pool_kernel: int = Field(32, ge=1, description="Max-pool width smoothing token scores.")
    neighbourhood: int = Field(32, ge=1, description="Tokens around each peak that rank with it (kept contiguous).")
    pool_scope: Literal["sentence", "document"] = Field(
        "document",
        description="Where smoothing and widening may reach: 'document' pools across sentence "
        "ends (a fact stated a sentence after the name the draft attends to ranks with it); "
        "'sentence' stops them at sentence ends, so a peak never lends its rank to the sentence "
        "beside it. 'document' kept more on the development items (docs/benchmarks.md).",
    )
    separator: str = Field(" … ", description="Joins kept spans inside a document.")
    prefix_cache_mb: int = Field(
        512,
        ge=0,
        description="Draft KV cache kept of recent prompts, in MiB, so a follow-up question over "
        "the same documents (or an agent's next turn over a grown history) forwards only the new "
        "tokens, and the sentence embeddings of texts seen before are reused too; 0 turns both "
        "off. Scores equal a fresh pass up to rounding.",
    )
    max_draft_tokens: int | None = Field(
        None, ge=128, description="Longest draft pass; None = the draft's position limit."
    )
    max_unit_tokens: int = Field(
        24,
        ge=1,
        description="Cap on a unit made of several words without spaces between them (CJK, URLs), "
        "in draft tokens; a single word or number longer than it stays one unit (kept whole or not).",
    )
    question_template: str = Field(
        "\n\nQuestion: {question}\nAnswer:", description="How the question follows the documents."
    )
    document_separator: str = Field("\n\n", description="Between documents in the draft prompt.")
    context_header: str = Field(
        "Documents:\n\n",
        description="Precedes the documents. Never empty in effect: decoder LMs dump most "
        "attention on the first token (an attention sink), which must not be a document token.",
    )

    chat: bool = Field(
        False,
        description="Frame the draft prompt with the draft's chat template, so lookahead "
        "tokens are the draft's answer rather than a continuation of the text.",
    )
    chat_system: str = Field(
        "Answer the question with a short phrase copied from the documents.",
        description="System message of the chat frame when no instruction is given.",
    )
    snap: Literal["word", "sentence"] = Field(
        "sentence",
        description="'sentence': sentences are kept whole (a long one in runs of its clauses, "
        "see max_sentence_tokens), ranked by their best token; 'word': word units ranked one by one.",
    )
    max_sentence_tokens: int = Field(
        48,
        ge=1,
        description="With snap='sentence', the longest unit kept whole, in draft tokens: a longer "
        "sentence is split after commas, semicolons, colons and dashes into runs of at most this "
        "(and at most the budget, at least 12 tokens), so the best sentence always fits in part.",
    )
    relevance_weight: float = Field(
        0.5,
        ge=0.0,
        description="With an embedder: weight of sentence-to-question similarity against "
        "draft attention (weight 1; both as percentile ranks). 0.5 was the best of 0.5/1/2 "
        "on Quoref (docs/benchmarks.md).",
    )
    fusion: Literal["sum", "max"] = Field(
        "max",
        description="With an embedder, how attention and relevance combine (both as percentile "
        "ranks): 'sum' adds them (relevance times relevance_weight); 'max' lets every token keep "
        "the better of its two ranks, so the top of each signal competes for the budget and "
        "neither drowns the other (relevance_weight does not apply).",
    )

    bridge: bool | None = Field(
        None,
        description="Multi-fact coverage, with an embedder: a second relevance round whose query is "
        "the question plus the round-1 best sentence and the two after it (the bridge: 'He works "
        "for X' after 'Y is a violin maker'), so a second fact that names X but nothing of the "
        "question can rank. One more embedder call; the draft still runs once. None (default): on "
        "when there is an embedder; True without one is refused.",
    )

    @model_validator(mode="after")
    def _weight_needs_sum(self) -> SpecPCSettings:
        # A weight that would be silently ignored is refused instead.
        if self.fusion == "max" and "relevance_weight" in self.model_fields_set:
            raise ValueError("relevance_weight has no effect with fusion='max'; leave it unset or use fusion='sum'")
        return self

    @model_validator(mode="after")
    def _truncation_needs_prefill_only(self) -> SpecPCSettings:
        if self.draft_layers is not None and self.lookahead > 1:
            raise ValueError("draft_layers truncates the draft, which then has no logits: use lookahead=1 with it")
        return self

    @field_validator("question_template")
    @classmethod
    def _has_question_slot(cls, value: str) -> str:
        if "{question}" not in value:
            raise ValueError("question_template must contain '{question}'")
        return value
