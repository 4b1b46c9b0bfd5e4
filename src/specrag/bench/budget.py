"""One budget for every prompt-compression method: target-token word units, filled best first.

Why a shared selector
---------------------
Methods differ in how they *score* text (draft attention, surprisal, embeddings, position),
not in how a score becomes a prompt. If each method counted its own budget in its own
tokenizer, a SmolLM2-scored method and a Qwen-scored one would hand the target different
amounts of text at "the same" budget. So every method here only produces per-unit scores over
the documents split into *target-tokenizer* word units; :func:`select` then takes units best
first until the budget, counted in target tokens, is spent, and joins kept units into verbatim
spans. The kept fraction is therefore exact and comparable across methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..core.budget import resolve_budget
from ..core.segmentation import DocumentTokens, merge_spans, tokenize_document
from ..core.specpc.grouping import group_cap, sentence_groups
from ..core.specpc.selection import DocumentUnits, choose_units

SEPARATOR = " … "
"""Joins kept spans inside a document (the same default as SpecPC)."""


@dataclass(frozen=True)
class Units:
    """The documents of one item as target-token word units."""

    documents: tuple[str, ...]
    tokens: tuple[DocumentTokens, ...]

    @property
    def total_tokens(self) -> int:
        """Target tokens of all documents (each tokenized alone, no special tokens)."""
        return sum(doc.num_tokens for doc in self.tokens)

    def unit_bounds(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Character ``[start, end)`` of each unit of document ``index``."""
        doc = self.tokens[index]
        ends = np.array([doc.unit_char_end(unit) for unit in range(doc.num_units)], dtype=np.int64)
        return doc.unit_char_starts, ends


def target_units(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str]) -> Units:
    """Split ``documents`` into word units of the target's tokenizer."""
    return Units(tuple(documents), tuple(tokenize_document(tokenizer, text) for text in documents))


@dataclass(frozen=True)
class Selection:
    """What a compression kept: verbatim texts per document, spans, and the target-token count."""

    texts: tuple[str, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    kept_tokens: int
    total_tokens: int
    budget: int

    @property
    def kept_fraction(self) -> float:
        return self.kept_tokens / self.total_tokens if self.total_tokens else 1.0


def unit_positions(units: Units) -> list[np.ndarray]:
    """Per document, the negative global position of each unit: a ranking key that puts
    earlier text first (the tie-break every method shares, and truncation's only key)."""
    out, offset = [], 0
    for doc in units.tokens:
        out.append(-(offset + np.arange(doc.num_units, dtype=np.float64)))
        offset += doc.num_units
    return out


def budget_tokens(units: Units, ratio: float) -> int:
    """Target tokens allowed at ``ratio`` (the package's rounding rule, half up)."""
    return resolve_budget(units.total_tokens, ratio, None)


def select(
    units: Units,
    keys: Sequence[Sequence[np.ndarray]],
    ratio: float,
    sentence_tokens: int | None = None,
    *,
    clause_fallback: bool = True,
) -> Selection:
    """Keep the best units of all documents within ``ratio`` of their target tokens.

    Parameters
    ----------
    units
        The item's documents as target units.
    keys
        Per ranking key (most significant first, higher is better), one array per document
        with one score per unit. Ties go to the earlier unit.
    ratio
        Budget as a fraction of the documents' target tokens, in (0, 1].
    sentence_tokens
        Keep units in whole sentences and clauses capped at this many target tokens, as
        SpecPC's ``snap="sentence"`` does with its ``max_sentence_tokens``; ``None``: word units.
    clause_fallback
        Offer a sentence that no longer fits as its clauses (SpecPC's selection); ``False``
        for the ablation only.
    """
    budget = budget_tokens(units, ratio)
    cap = group_cap(budget, sentence_tokens) if sentence_tokens is not None else None
    documents = [
        DocumentUnits(
            index=index,
            doc=doc,
            keys=[np.asarray(key[index], dtype=np.float64) for key in keys],
            groups=sentence_groups(doc, cap) if cap is not None else None,
        )
        for index, doc in enumerate(units.tokens)
        if doc.num_units
    ]
    chosen = choose_units(documents, budget, clause_fallback=clause_fallback)
    texts, spans = [], []
    for index, text in enumerate(units.documents):
        doc_spans = _spans(units, index, chosen.units.get(index, np.zeros(0, dtype=np.int64)).tolist())
        spans.append(tuple(doc_spans))
        texts.append(SEPARATOR.join(text[start:end] for start, end in doc_spans))
    return Selection(tuple(texts), tuple(spans), budget - chosen.unspent, units.total_tokens, budget)


def _spans(units: Units, index: int, kept: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive kept units as character spans, merged over whitespace, trimmed."""
    starts, ends = units.unit_bounds(index)
    return merge_spans(units.documents[index], [(int(starts[u]), int(ends[u])) for u in kept])


def token_scores_to_units(
    units: Units, index: int, token_anchors: np.ndarray, scores: np.ndarray, how: str = "max"
) -> np.ndarray:
    """Carry per-token scores of *another* tokenizer (the draft's) onto target units.

    Each scored token goes to the target unit its anchor falls in (its first visible
    character: :attr:`~specrag.core.segmentation.DocumentTokens.token_anchors`, so the
    leading space of ``" Zorblat"`` does not hand its score to the word before); a unit gets the
    max (or mean) of its tokens. A unit no token starts in (a draft token spanning two target
    units) inherits the previous unit's score, so nothing is left unscored.
    """
    starts, _ = units.unit_bounds(index)
    count = starts.shape[0]
    if count == 0:
        return np.zeros(0)
    owner = np.clip(np.searchsorted(starts, token_anchors, side="right") - 1, 0, count - 1)
    values = np.asarray(scores, dtype=np.float64)
    if how == "max":
        out = np.full(count, -np.inf)
        np.maximum.at(out, owner, values)
    elif how == "mean":
        total = np.zeros(count)
        seen = np.zeros(count)
        np.add.at(total, owner, values)
        np.add.at(seen, owner, 1.0)
        out = np.where(seen > 0, total / np.maximum(seen, 1.0), -np.inf)
    else:
        raise ValueError(f"how must be 'max' or 'mean', got {how!r}")
    for unit in range(count):  # forward-fill units no token starts in
        if not np.isfinite(out[unit]):
            out[unit] = (
                out[unit - 1]
                if unit
                else (np.nanmax(np.where(np.isfinite(out), out, np.nan)) if np.isfinite(out).any() else 0.0)
            )
    return out
