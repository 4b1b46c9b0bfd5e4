"""Draft tokens of one document, grouped into word units with character offsets.

SpecPC scores *tokens* but must emit *text*: verbatim, in order, cut only between whole
words, numbers and grapheme clusters. A unit is a run of consecutive tokens that starts
where a word starts. Selecting whole units keeps budget arithmetic in draft tokens (a unit
knows how many tokens it holds) while the text we cut is always
``document[unit_start : unit_end]``, and a unit boundary is only ever placed where that cut
splits nothing a reader sees as one piece:

* a **grapheme cluster** (a letter with its combining marks, an emoji ZWJ sequence, a flag,
  a Thai or Devanagari syllable, ``"\\r\\n"``), found with the ``regex`` package's ``\\X``
  (extended grapheme clusters of UAX #29; ``regex`` is a dependency of transformers);
* a **number**: a digit run, with ``.`` / ``,`` (and the Arabic decimal and thousands
  signs, and no-break spaces) between digits, such as ``1,234.5``, ``１９５８`` or
  ``1\\u00a0000`` (no-break space);
* a **word**: a unit starts only after whitespace, or at a character of a script written
  without spaces (CJK, kana, Thai, ...), where every grapheme cluster may start one.

Word starts are found from the tokenizer's offset mapping, not from the token strings, so the
same code serves byte-level BPE (GPT-2, Llama 3, Qwen), SentencePiece and WordPiece.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import regex
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


# Between two digits these belong to the number: decimal and thousands signs, and the
# no-break spaces that group digits ("1\u00a0000" in French).
_NUMBER_JOINERS = frozenset(".,\u066b\u066c\u00a0\u2007\u202f")


def grapheme_boundaries(text: str) -> np.ndarray:
    """``boundary[i]`` is True when ``text`` may be cut before character ``i`` without
    splitting an extended grapheme cluster (length ``len(text) + 1``; both ends are True)."""
    boundary = np.zeros(len(text) + 1, dtype=bool)
    boundary[[match.start() for match in regex.finditer(r"\X", text)]] = True
    boundary[len(text)] = True
    return boundary


def inside_number(text: str, position: int) -> bool:
    """True when cutting ``text`` before ``position`` would split a number (``19|23``,
    ``3|.5``, ``3.|5``)."""
    if position <= 0 or position >= len(text):
        return False
    before, char = text[position - 1], text[position]
    if before.isdigit() and char.isdigit():
        return True
    if char in _NUMBER_JOINERS and before.isdigit():
        return position + 1 < len(text) and text[position + 1].isdigit()
    if before in _NUMBER_JOINERS and char.isdigit():
        return position >= 2 and text[position - 2].isdigit()
    return False


def _word_character(char: str) -> bool:
    """Letters, digits and marks: the characters a word is made of."""
    return unicodedata.category(char)[0] in "LNM"


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
    boundaries:
        :func:`grapheme_boundaries` of ``text``, kept for trimming spans without cutting a
        cluster.
    """

    text: str
    ids: np.ndarray
    token_starts: np.ndarray
    token_ends: np.ndarray
    unit_of_token: np.ndarray
    unit_first_token: np.ndarray
    unit_char_starts: np.ndarray
    boundaries: np.ndarray

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

    @cached_property
    def token_anchors(self) -> np.ndarray:
        """The character that places each token in the text: its first non-whitespace one, or
        for a whitespace-only token the character before it (it belongs with what precedes it).

        Byte-level BPE tokens carry the space *before* a word (``" Zorblat"``) and others the
        space after one (``"river. "``); locating a token by its raw start would put the first
        of these in the previous sentence or word, and the second in the next one, so a score
        would leak across a sentence boundary. Sentence lookups and carrying scores onto
        another tokenizer's units use these anchors.
        """
        return token_anchors(self.text, self.token_starts, self.token_ends)

    def unit_char_end(self, unit: int) -> int:
        """Character just past ``unit``: the furthest end of any of its tokens."""
        first = int(self.unit_first_token[unit])
        size = int(self.unit_sizes[unit])
        return int(self.token_ends[first : first + size].max())


def token_anchors(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Where each token ``text[starts[i]:ends[i]]`` sits: its first non-whitespace character,
    or for a whitespace-only token the character before it (see
    :attr:`DocumentTokens.token_anchors`); works for any tokenizer's offsets."""
    visible = np.array([i for i, char in enumerate(text) if not char.isspace()], dtype=np.int64)
    position = np.searchsorted(visible, starts, side="left")
    found = np.minimum(position, max(visible.shape[0] - 1, 0))
    first = visible[found] if visible.size else starts
    inside = (position < visible.shape[0]) & (first < ends)
    return np.where(inside, first, np.maximum(starts - 1, 0)).astype(np.int64)


def tokenize_document(tokenizer: PreTrainedTokenizerBase, text: str, max_unit_tokens: int = 24) -> DocumentTokens:
    """Tokenize ``text`` with offsets and group the tokens into word units.

    A new unit begins at a token that starts a word (see the module notes), and only where
    the cut is on a character boundary (byte-level tokens may split one character), on a
    grapheme cluster boundary and outside a number.

    ``max_unit_tokens`` caps unit size so that one giant run without spaces (a URL, a file
    path, a row of emoji, a run of unspaced script the heuristics missed) cannot swallow the
    budget in one piece: past the cap, a unit ends at the next token boundary that is safe
    as above *and* not inside a word (not between two letters, digits or marks), so a URL
    splits at its ``/`` and ``.``. A single word or number longer than the cap is never cut:
    it stays one unit of more than ``max_unit_tokens`` tokens, kept whole or not at all,
    because half a word or a number is a wrong context, not a shorter one.
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
    boundary = grapheme_boundaries(text)
    unit_of_token = np.zeros(len(ids), dtype=np.int64)
    unit_first: list[int] = []
    unit_chars: list[int] = []
    reach = 0  # furthest character covered by any earlier token: where the last unit ends
    for index in range(len(ids)):
        start, end = int(starts[index]), int(ends[index])
        visible = _first_visible(text, start, end)
        size = index - unit_first[-1] if unit_first else 0
        if not unit_first:
            begins = True
        elif visible is None or start < reach or not _safe_cut(text, boundary, reach, visible):
            begins = False
        else:
            begins = _is_word_start(text, visible) or (
                size >= max_unit_tokens and not (_word_character(text[visible - 1]) and _word_character(text[visible]))
            )
        if begins:
            char = visible if visible is not None else start
            if not unit_first:  # the text may open inside a cluster ("  \u0301..."): start it whole
                char = int(np.flatnonzero(boundary[: char + 1])[-1])
            unit_first.append(index)
            unit_chars.append(char)
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
        boundaries=boundary,
    )


def _safe_cut(text: str, boundary: np.ndarray, end: int, start: int) -> bool:
    """Whether one unit may end at ``end`` and the next begin at ``start`` (only whitespace
    or uncovered characters lie between): both on grapheme boundaries, not inside a number."""
    return bool(boundary[end] and boundary[start]) and not inside_number(text, start)


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


def merge_spans(
    text: str, pieces: list[tuple[int, int]], boundaries: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Merge sorted character spans with only whitespace between them; trim each one's ends.

    Kept word units become the spans a reader sees: neighbouring units join into one
    verbatim piece, and no piece starts or ends in whitespace (the separator supplies it),
    except a whitespace character that carries a combining mark (``" \u0301"`` is one
    grapheme cluster), which is kept rather than cut from its mark. ``boundaries`` are the
    text's :func:`grapheme_boundaries` when the caller has them.
    """
    merged: list[list[int]] = []
    for start, end in pieces:
        if merged and not text[merged[-1][1] : start].strip():
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if boundaries is None and merged:
        boundaries = grapheme_boundaries(text)
    spans = []
    for start, end in merged:
        assert boundaries is not None
        while start < end and text[start].isspace() and boundaries[start + 1]:
            start += 1
        while end > start and text[end - 1].isspace() and boundaries[end - 1]:
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans
