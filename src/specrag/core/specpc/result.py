"""Plain result types of SpecPC: what was kept, where it came from, what it cost.

Pydantic models so that the CLI's ``--json`` and the framework adapters can serialise them
without custom code; no tensors in here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CompressedDocument(BaseModel):
    """One input document after compression.

    ``text`` is ``separator.join(original[start:end] for start, end in spans)``: every piece is
    a verbatim substring of ``original``, pieces are in order and never overlap.
    """

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the document in the input list.")
    original: str = Field(description="The document as given.")
    text: str = Field(description="Kept text: verbatim pieces joined by the separator.")
    spans: list[tuple[int, int]] = Field(description="Kept character spans [start, end) in order.")
    original_tokens: int = Field(description="Tokens in the document (the budget's count: see counted_in).")
    kept_tokens: int = Field(description="Tokens of the document that were kept (the budget's count).")
    relevance: float = Field(description="Highest draft attention any token of the document received (0 to 1).")

    @property
    def kept_fraction(self) -> float:
        """Share of the document's tokens that were kept (1.0 for empty documents)."""
        return self.kept_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def is_dropped(self) -> bool:
        """True when nothing of a non-empty document survived."""
        return self.original_tokens > 0 and self.kept_tokens == 0


class CompressionResult(BaseModel):
    """What :meth:`specrag.SpecPC.compress` returns: one entry per input document, in order."""

    model_config = ConfigDict(frozen=True)

    documents: list[CompressedDocument]
    question: str
    instruction: str | None = None
    budget: int = Field(description="Document tokens the call was allowed (counted as counted_in says).")
    separator: str
    draft: str = Field(description="Name of the draft model that scored the tokens.")
    counted_in: str = Field(
        "draft tokens",
        description="Whose tokens budget and counts are in: the draft's, or the target's (SpecPC's target_tokenizer).",
    )
    pieces: int = Field(description="Draft passes needed (more than one for over-long inputs).")
    seconds: float = Field(description="Wall-clock seconds spent compressing.")

    @property
    def texts(self) -> list[str]:
        """Compressed documents as plain strings, same order and count as the input."""
        return [document.text for document in self.documents]

    @property
    def original_tokens(self) -> int:
        return sum(document.original_tokens for document in self.documents)

    @property
    def kept_tokens(self) -> int:
        return sum(document.kept_tokens for document in self.documents)

    @property
    def kept_fraction(self) -> float:
        total = self.original_tokens
        return self.kept_tokens / total if total else 1.0

    def context(self, joiner: str = "\n\n", skip_dropped: bool = True) -> str:
        """The compressed documents as one context string for the answering LLM."""
        return joiner.join(
            document.text for document in self.documents if document.text and not (skip_dropped and document.is_dropped)
        )

    def to_prompt(self, template: str | None = None) -> str:
        """A ready prompt: instruction, compressed context and question, never cut.

        ``template`` may use ``{instruction}``, ``{context}`` and ``{question}``.
        """
        if template is None:
            head = f"{self.instruction}\n\n" if self.instruction else ""
            return f"{head}{self.context()}\n\nQuestion: {self.question}\nAnswer:"
        return template.format(instruction=self.instruction or "", context=self.context(), question=self.question)
