"""What a word unit costs under the budget: draft tokens, or the answering model's tokens.

A served target counts its context window in its own tokenizer, and SpecPC's draft may use
another one (SmolLM2's 49k vocabulary against Qwen's 151k, a hosted model's tiktoken). With a
``target_tokenizer`` the budget, ``keep_ratio`` and every reported count are in target tokens:
the draft still scores and segments the text, and each of its word units costs the target
tokens that fall in it.

Two ways to count
-----------------
- A fast Hugging Face tokenizer (or a name :func:`~specrag.load_tokenizer` takes): the
  document is tokenized once with offsets, and each target token is charged to the word unit
  its first visible character lies in. Every target token is charged exactly once, so a
  document's units add up to its target token count.
- A counting function ``str -> int`` (``tiktoken``'s ``len(enc.encode(text))``, an API's
  counter): each unit is counted with the whitespace before it, the way BPE tokenizers attach
  a space to the next word. The sum can differ from counting the whole text by a few tokens
  per thousand (merges across units); the kept text is what the function says it is, unit by
  unit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..models import load_tokenizer
from ..segmentation import DocumentTokens, token_anchors

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class UnitCosts:
    """How one SpecPC instance prices word units (``counted_in`` names it in results)."""

    counted_in: str
    _tokenizer: PreTrainedTokenizerBase | None = None
    _count: TokenCounter | None = None

    def count(self, text: str, draft_tokenizer: PreTrainedTokenizerBase) -> int:
        """Tokens of ``text`` in the budget's count (``draft_tokenizer`` when that is the draft's)."""
        if not text:
            return 0
        if self._count is not None:
            return self._count(text)
        tokenizer = self._tokenizer if self._tokenizer is not None else draft_tokenizer
        return len(tokenizer.encode(text, add_special_tokens=False))

    def of(self, doc: DocumentTokens) -> np.ndarray:
        """Cost of every unit of ``doc``, in the budget's tokens (non-negative integers)."""
        if self._tokenizer is not None:
            return _offset_costs(doc, self._tokenizer)
        if self._count is not None:
            return _counted_costs(doc, self._count)
        return doc.unit_sizes


def resolve_costs(target_tokenizer: Any) -> UnitCosts:
    """:class:`UnitCosts` from SpecPC's ``target_tokenizer`` argument.

    Raises
    ------
    TypeError
        For a slow tokenizer (no offsets: pass a counting function instead) or anything
        that is neither a tokenizer, a name, nor a callable.
    """
    if target_tokenizer is None:
        return UnitCosts("draft tokens")
    if isinstance(target_tokenizer, str | os.PathLike):
        target_tokenizer = load_tokenizer(target_tokenizer)
    if isinstance(target_tokenizer, PreTrainedTokenizerBase):
        if not target_tokenizer.is_fast:
            raise TypeError(
                f"target_tokenizer {type(target_tokenizer).__name__} is a slow tokenizer (no offsets); "
                "pass a fast one, or a counting function such as lambda text: len(tok.encode(text))"
            )
        return UnitCosts(f"target tokens ({target_tokenizer.name_or_path or 'tokenizer'})", _tokenizer=target_tokenizer)
    if callable(target_tokenizer):
        name = getattr(target_tokenizer, "__qualname__", type(target_tokenizer).__name__)
        return UnitCosts(f"target tokens (counted by {name})", _count=_checked_counter(target_tokenizer))
    raise TypeError(
        f"target_tokenizer must be a tokenizer, a model name or a function str -> int, "
        f"got {type(target_tokenizer).__name__}"
    )


def _checked_counter(count: TokenCounter) -> TokenCounter:
    """``count``, refusing anything but a non-negative int (a wrong count is a wrong budget)."""

    def checked(text: str) -> int:
        value = count(text)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise TypeError(f"target_tokenizer returned {value!r} for {text[:30]!r}; it must return a token count >= 0")
        return int(value)

    return checked


def _offset_costs(doc: DocumentTokens, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Target tokens charged to the unit holding each one's first visible character."""
    encoded = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    anchors = token_anchors(doc.text, offsets[:, 0], offsets[:, 1])
    unit = np.searchsorted(doc.unit_char_starts, anchors, side="right") - 1
    return np.bincount(np.clip(unit, 0, None), minlength=doc.num_units).astype(np.int64)


def _counted_costs(doc: DocumentTokens, count: TokenCounter) -> np.ndarray:
    """Each unit counted with the whitespace before it (from the previous unit's end)."""
    costs = np.zeros(doc.num_units, dtype=np.int64)
    previous_end = 0
    for unit in range(doc.num_units):
        end = doc.unit_char_end(unit)
        costs[unit] = count(doc.text[previous_end:end])
        previous_end = end
    return costs
