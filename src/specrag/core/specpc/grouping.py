"""Readable selection units: sentences, and clauses of long sentences, as groups of word units.

Ranking happens per token, but what a reader and an answering LLM need is a clause with its
subject and verb. With ``snap="sentence"`` selection takes *groups* of word units whole: a
sentence, or, when a sentence is longer than the cap, runs of its clauses (split after
``,`` ``;`` ``:`` and dashes) packed up to the cap; a clause longer than the cap is cut into
near-equal runs of words. No group is ever partly kept, so the kept text is whole sentences
and clauses, never "between 1884 and … it … fourteen arches".

Why the cap also follows the budget: a group larger than the whole budget could never be
kept, so the best sentence of a long document would be skipped for a smaller, less relevant
one. No group is larger than the budget (nor than ``max_sentence_tokens``, nor smaller than
``MIN_GROUP_TOKENS``), so the best sentence is always kept at least in part, as clauses.
"""

from __future__ import annotations

import math

import numpy as np

from ..segmentation import DocumentTokens
from ..sentences import sentence_index

MIN_GROUP_TOKENS = 12
"""Smallest cap: below it a "clause" is a few words and readability is lost anyway."""

_CLAUSE_ENDS = frozenset(",;:\u2013\u2014\u3001\uff0c\uff1b\uff1a")
"""Characters after which a clause may end (comma, semicolon, colon, en/em dash, CJK forms)."""


def group_cap(budget: int, max_sentence_tokens: int) -> int:
    """Largest group, in tokens, for a selection under ``budget`` tokens (see module notes)."""
    return max(MIN_GROUP_TOKENS, min(max_sentence_tokens, budget))


def sentence_groups(doc: DocumentTokens, cap: int, sizes: np.ndarray | None = None) -> np.ndarray:
    """Group index of every word unit of ``doc``: sentences, split into clause runs past ``cap``.

    Group indices are non-decreasing along the document, so a group is a contiguous run of
    units and its text one verbatim span. ``sizes``: each unit's cost in the budget's tokens
    (default: its draft tokens).
    """
    if doc.num_units == 0:
        return np.zeros(0, dtype=np.int64)
    sentence = sentence_index(doc.text, doc.unit_char_starts)
    groups = np.zeros(doc.num_units, dtype=np.int64)
    next_group = 0
    bounds = np.flatnonzero(np.diff(sentence)) + 1
    for run in np.split(np.arange(doc.num_units), bounds):
        for piece in split_run(doc, run, cap, sizes):
            groups[piece] = next_group
            next_group += 1
    return groups


def split_run(
    doc: DocumentTokens, run: np.ndarray, cap: int, sizes: np.ndarray | None = None, *, cut_clauses: bool = True
) -> list[np.ndarray]:
    """A sentence's (or clause run's) units as pieces of at most ``cap`` tokens: clause runs,
    and near-equal cuts of a clause longer than ``cap`` (a lone word may exceed it).

    ``sizes``: unit costs (default: draft tokens). ``cut_clauses=False`` leaves a clause
    longer than ``cap`` out instead of cutting it: selection's fallback for a sentence that no
    longer fits offers whole clauses only, never "the copper bridge" without who built it.
    """
    sizes = doc.unit_sizes if sizes is None else sizes
    if int(sizes[run].sum()) <= cap:
        return [run]
    pieces: list[np.ndarray] = []
    current: list[np.ndarray] = []
    current_size = 0
    for clause in _clauses(doc, run):
        size = int(sizes[clause].sum())
        if current and current_size + size > cap:
            pieces.append(np.concatenate(current))
            current, current_size = [], 0
        if size > cap:
            if cut_clauses:
                pieces.extend(_even_chunks(clause, sizes, cap))
            continue
        current.append(clause)
        current_size += size
    if current:
        pieces.append(np.concatenate(current))
    return pieces


def _clauses(doc: DocumentTokens, run: np.ndarray) -> list[np.ndarray]:
    """Split a sentence's units after the units whose text ends in a clause mark."""
    ends = [
        position
        for position, unit in enumerate(run[:-1].tolist())
        if doc.text[int(doc.unit_char_starts[unit]) : doc.unit_char_end(unit)].rstrip()[-1:] in _CLAUSE_ENDS
    ]
    return np.split(run, [end + 1 for end in ends])


def _even_chunks(units: np.ndarray, sizes: np.ndarray, cap: int) -> list[np.ndarray]:
    """Cut a run of units into consecutive chunks of at most ``cap`` tokens, near-equal in size.

    A chunk closes once it reaches ``total / ceil(total / cap)`` tokens, or before the unit
    that would take it past ``cap`` (a single unit larger than ``cap`` is a chunk alone).
    """
    unit_sizes = sizes[units].tolist()
    target = sum(unit_sizes) / max(1, math.ceil(sum(unit_sizes) / cap))
    chunks: list[np.ndarray] = []
    first, size = 0, 0
    for position, unit_size in enumerate(unit_sizes):
        if size and (size + unit_size > cap or size >= target):
            chunks.append(units[first:position])
            first, size = position, 0
        size += unit_size
    chunks.append(units[first:])
    return chunks
