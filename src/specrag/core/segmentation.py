"""Draft tokens of one document, grouped into word units with character offsets.

SpecPC scores *tokens* but must emit *text*: verbatim, in order, cut only at word boundaries.
A unit is a run of consecutive tokens that starts where a word starts. Selecting whole units
keeps budget arithmetic in draft tokens (a unit knows how many tokens it holds) while the
text we cut is always ``document[unit_start : unit_end]``, which cannot split a word or a
multi-byte character.

Word starts are found from the tokenizer's offset mapping, not from the token strings, so the
same code serves byte-level BPE (GPT-2, Llama 3, Qwen), SentencePiece and WordPiece.
Scripts written without spaces (CJK, kana, Thai, ...) have no word separators, so every
character there may start a unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

# Scripts written without spaces between words: each character may begin a unit.
_UNSPACED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # full-width forms
    (0x20000, 0x3FFFF),  # CJK extensions B+
)


def is_unspaced_char(char: str) -> bool:
    """True for characters of scripts that do not separate words with spaces."""
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED_RANGES)


@dataclass(frozen=True)
class DocumentTokens:
    """One document's draft tokens and their grouping into word units.

    Attributes
    ----------
    text:
        The document, unchanged.
    ids:
        Draft token ids, without special tokens.
    token_starts, token_ends:
        Character offsets of each token in ``text`` (``end`` exclusive).
    unit_of_token:
        Index of the unit each token belongs to (non-decreasing).
    unit_first_token:
        Index of the first token of each unit; ``unit_first_token[-1]`` plus sizes covers all.
    unit_char_starts:
        Character where each unit's text starts (a word start, leading whitespace skipped).
    """

    text: str
    ids: np.ndarray
    token_starts: np.ndarray
    token_ends: np.ndarray
    unit_of_token: np.ndarray
    unit_first_token: np.ndarray
    unit_char_starts: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_units(self) -> int:
        return int(self.unit_first_token.shape[0])

    @property
    def unit_sizes(self) -> np.ndarray:
        """Number of draft tokens in each unit."""
        bounds = np.append(self.unit_first_token, self.num_tokens)
        return np.diff(bounds)

    def unit_char_end(self, unit: int, tokens_kept: int | None = None) -> int:
        """Character just past ``unit`` (or past its first ``tokens_kept`` tokens)."""
        first = int(self.unit_first_token[unit])
        size = int(self.unit_sizes[unit])
        count = size if tokens_kept is None else tokens_kept
        return int(self.token_ends[first : first + count].max())

    def char_boundary_prefixes(self, unit: int) -> np.ndarray:
        """Token counts ``k`` (1..size-1) after which a unit can be cut without splitting a
        character: token ``k`` starts at or after the end of every earlier token."""
        first = int(self.unit_first_token[unit])
        size = int(self.unit_sizes[unit])
        ends = np.maximum.accumulate(self.token_ends[first : first + size])
        starts = self.token_starts[first : first + size]
        return np.nonzero(starts[1:] >= ends[:-1])[0] + 1


def tokenize_document(tokenizer: PreTrainedTokenizerBase, text: str, max_unit_tokens: int = 24) -> DocumentTokens:
    """Tokenize ``text`` with offsets and group the tokens into word units.

    ``max_unit_tokens`` caps unit size so that one giant "word" (a URL, a base64 blob, a
    run of unspaced script the heuristics missed) cannot swallow the budget in one piece; an
    over-long unit is split at the next token boundary that is also a character boundary.
    """
    if not tokenizer.is_fast:
        raise TypeError(
            f"{type(tokenizer).__name__} is a slow tokenizer; SpecPC needs a fast tokenizer "
            "(offset mappings) to map kept tokens back to text"
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    unit_of_token = np.zeros(len(ids), dtype=np.int64)
    unit_first: list[int] = []
    unit_chars: list[int] = []
    reach = 0  # furthest character covered by any earlier token
    for index in range(len(ids)):
        start, end = int(starts[index]), int(ends[index])
        visible = _first_visible(text, start, end)
        on_char_boundary = start >= reach
        size = index - unit_first[-1] if unit_first else 0
        if not unit_first:
            begins = True
        elif visible is None or not on_char_boundary:
            begins = False
        else:
            begins = _is_word_start(text, visible) or size >= max_unit_tokens
        if begins:
            unit_first.append(index)
            unit_chars.append(visible if visible is not None else start)
        unit_of_token[index] = len(unit_first) - 1
        reach = max(reach, end)
    return DocumentTokens(
        text=text,
        ids=ids,
        token_starts=starts,
        token_ends=ends,
        unit_of_token=unit_of_token,
        unit_first_token=np.asarray(unit_first, dtype=np.int64),
        unit_char_starts=np.asarray(unit_chars, dtype=np.int64),
    )


def _first_visible(text: str, start: int, end: int) -> int | None:
    """Index of the first non-whitespace character in ``text[start:end]``, or None."""
    for position in range(start, min(end, len(text))):
        if not text[position].isspace():
            return position
    return None


def _is_word_start(text: str, position: int) -> bool:
    if position == 0:
        return True
    before, char = text[position - 1], text[position]
    return before.isspace() or is_unspaced_char(char) or is_unspaced_char(before)


def merge_spans(text: str, pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge sorted character spans with only whitespace between them; trim each one's ends.

    Kept word units become the spans a reader sees: neighbouring units join into one
    verbatim piece, and no piece starts or ends in whitespace (the separator supplies it).
    """
    merged: list[list[int]] = []
    for start, end in pieces:
        if merged and not text[merged[-1][1] : start].strip():
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    spans = []
    for start, end in merged:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans
