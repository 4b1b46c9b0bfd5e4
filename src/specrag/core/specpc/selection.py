"""Selection: from per-token ranking keys to kept word units, then to verbatim spans.

Pure functions on arrays and :class:`~specrag.core.segmentation.DocumentTokens`, so the
budget and ordering rules are tested without a model. The budget is global: units of all
documents compete, best first, and a document may end up with nothing kept.

Units are atomic: a word, a number or a grapheme cluster is kept whole or not at all. The
budget is therefore never exceeded, and left unspent only by less than the smallest unit
that was not kept (it did not fit); spending those last tokens on the leading part of a
unit would turn ``1923`` into ``1``, a wrong context rather than a shorter one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..segmentation import DocumentTokens, merge_spans
from .grouping import MIN_GROUP_TOKENS, group_cap, sentence_groups, split_run
from .ranking import TokenKeys
from .result import CompressedDocument


@dataclass(frozen=True)
class UnitRanking:
    """Word units of all documents, flattened, with what selection needs to know."""

    document: np.ndarray  # document index of each unit
    unit: np.ndarray  # unit index inside its document
    size: np.ndarray  # draft tokens per unit
    order: np.ndarray  # unit positions (into the arrays above), best first


def rank_units(
    document: np.ndarray,
    unit: np.ndarray,
    size: np.ndarray,
    keys: list[np.ndarray],
) -> UnitRanking:
    """Order units by ``keys`` (each higher-is-better, first key most significant); ties go
    to the earlier unit so the result is deterministic."""
    position = np.arange(document.shape[0])
    # np.lexsort sorts by the *last* key first and ascending: negate and reverse.
    order = np.lexsort([position] + [-key for key in reversed(keys)])
    return UnitRanking(document=document, unit=unit, size=size, order=order)


def fill_budget(ranking: UnitRanking, budget: int) -> tuple[np.ndarray, int]:
    """Greedily take whole units in rank order while they fit.

    Returns the boolean "kept" mask over units and the tokens still unspent (non-zero only
    when every unit left out is larger than what remains; units are never cut to fill it).
    """
    kept = np.zeros(ranking.size.shape[0], dtype=bool)
    remaining = budget
    smallest_left = int(ranking.size.min()) if ranking.size.size else 0
    for index in ranking.order:
        if remaining == 0 or remaining < smallest_left:
            break
        cost = int(ranking.size[index])
        if cost > remaining:
            continue
        kept[index] = True
        remaining -= cost
    return kept, remaining


@dataclass(frozen=True)
class Selection:
    """Kept units per document, and the budget they leave unspent.

    Attributes
    ----------
    units
        ``{document: sorted unit indices}``, each unit kept whole.
    unspent
        Budget tokens left over: smaller than every unit that was not kept (or spared by a
        duplicate that was skipped).
    """

    units: dict[int, np.ndarray]
    unspent: int


@dataclass(frozen=True)
class DocumentUnits:
    """One document as selection sees it: its units, one value per unit for every ranking key
    (most significant first), and optionally the readable groups its units are kept in."""

    index: int
    doc: DocumentTokens
    keys: Sequence[np.ndarray]
    groups: np.ndarray | None = None
    """Group index of each unit, non-decreasing (:func:`~.grouping.sentence_groups`); a group
    is kept whole or not at all. ``None``: every unit is its own group."""
    sizes: np.ndarray | None = None
    """Each unit's cost in the budget's tokens (:mod:`~.costs`); ``None``: its draft tokens."""

    @property
    def costs(self) -> np.ndarray:
        return self.doc.unit_sizes if self.sizes is None else self.sizes


def choose_units(documents: Sequence[DocumentUnits], budget: int, *, clause_fallback: bool = True) -> Selection:
    """Choose kept units across all documents under one global ``budget``.

    Without groups, units rank by their keys (first key most significant, then document
    order) and are taken while they fit (:func:`fill_budget`). With groups, groups rank by
    their units' best value of each key and are taken whole while they fit; an exact repeat
    of a kept group's text (case and spacing aside) is skipped. A group that no longer fits is
    offered again as its whole clauses (split after ``, ; :`` and dashes), packed up to what is
    left (:func:`~.grouping.split_run`), each ranked by its own units: so the clause that
    carries a long sentence's best token is still kept when the rest of the sentence is not,
    instead of a whole lower-ranked sentence. The fallback never cuts inside a clause: what no
    remaining piece fits into stays unspent.
    ``clause_fallback=False`` skips a non-fitting group outright (measured in the benchmarks).
    """
    if not documents or budget == 0:
        return Selection({}, budget)
    if all(entry.groups is None for entry in documents):
        return _choose_word_units(documents, budget)
    return _choose_groups(documents, budget, clause_fallback)


def _choose_word_units(documents: Sequence[DocumentUnits], budget: int) -> Selection:
    """Word units ranked and taken whole, best first (no groups, no clause fallback)."""
    ranking = rank_units(
        np.concatenate([np.full(entry.doc.num_units, entry.index) for entry in documents]),
        np.concatenate([np.arange(entry.doc.num_units) for entry in documents]),
        np.concatenate([entry.costs for entry in documents]),
        [
            np.concatenate([np.asarray(entry.keys[k], dtype=np.float64) for entry in documents])
            for k in range(len(documents[0].keys))
        ],
    )
    kept, remaining = fill_budget(ranking, budget)
    units: dict[int, list[int]] = {}
    for position in np.flatnonzero(kept):
        units.setdefault(int(ranking.document[position]), []).append(int(ranking.unit[position]))
    return Selection({doc: np.sort(np.array(runs)) for doc, runs in units.items()}, remaining)


_Piece = tuple[tuple[float, ...], int, int, int, bool]
"""A selection candidate: (rank: negated keys then entry and first unit, entry, first unit,
end unit, whether it may still fall back to its clauses)."""


def _piece(entry: DocumentUnits, position: int, first: int, end: int, whole: bool) -> _Piece:
    rank = tuple(-float(np.max(np.asarray(key[first:end], dtype=np.float64))) for key in entry.keys)
    return (rank + (float(position), float(first)), position, first, end, whole)


def _choose_groups(documents: Sequence[DocumentUnits], budget: int, clause_fallback: bool) -> Selection:
    """Whole groups best first, a non-fitting group falling back to its clauses once."""
    heap: list[_Piece] = []
    for position, entry in enumerate(documents):
        groups = entry.groups if entry.groups is not None else np.arange(entry.doc.num_units)
        firsts = np.flatnonzero(np.diff(groups, prepend=-1)).tolist() + [entry.doc.num_units]
        heap.extend(_piece(entry, position, first, end, True) for first, end in itertools.pairwise(firsts))
    heapq.heapify(heap)
    smallest = min(int(entry.costs.min()) for entry in documents)
    remaining = budget
    seen: set[str] = set()
    kept: dict[int, list[np.ndarray]] = {}
    while heap and remaining >= max(smallest, 1):
        _, position, first, end, whole = heapq.heappop(heap)
        entry = documents[position]
        cost = int(entry.costs[first:end].sum())
        if cost > remaining:
            if clause_fallback and whole and end - first > 1 and remaining >= MIN_GROUP_TOKENS:
                run = np.arange(first, end)
                for piece in split_run(entry.doc, run, remaining, entry.costs, cut_clauses=False):
                    heapq.heappush(heap, _piece(entry, position, int(piece[0]), int(piece[-1]) + 1, False))
            continue
        label = _span_label(entry.doc, first, end - 1)
        if label in seen:
            continue
        seen.add(label)
        kept.setdefault(entry.index, []).append(np.arange(first, end))
        remaining -= cost
    return Selection({doc: np.sort(np.concatenate(runs)) for doc, runs in kept.items()}, remaining)


def _span_label(doc: DocumentTokens, first_unit: int, last_unit: int) -> str:
    """A run's text with case and runs of whitespace folded: equal labels are repeats."""
    text = doc.text[int(doc.unit_char_starts[first_unit]) : doc.unit_char_end(last_unit)]
    return " ".join(text.split()).casefold()


def select_units(
    tokenized: Sequence[DocumentTokens | None],
    keys: Sequence[TokenKeys | None],
    budget: int,
    group_tokens: int | None = None,
    costs: Sequence[np.ndarray | None] | None = None,
) -> Selection:
    """Choose kept units across all documents under one global ``budget``.

    A unit's key is its tokens' best value of each per-token key. With ``group_tokens`` (the
    ``max_sentence_tokens`` of ``snap="sentence"``), units are kept in whole sentences and
    clauses (:mod:`~.grouping`), capped by :func:`~.grouping.group_cap` of the budget.
    ``costs``: per document, each unit's cost in the budget's tokens (:mod:`~.costs`);
    ``None``: draft tokens.
    """
    unit_costs = list(costs) if costs is not None else [None] * len(tokenized)
    cap = group_cap(budget, group_tokens) if group_tokens is not None else None
    documents = [
        DocumentUnits(
            index=index,
            doc=doc,
            keys=[np.maximum.reduceat(key, doc.unit_first_token) for key in token_keys],
            groups=sentence_groups(doc, cap, unit_costs[index]) if cap is not None else None,
            sizes=unit_costs[index],
        )
        for index, (doc, token_keys) in enumerate(zip(tokenized, keys, strict=True))
        if doc is not None and token_keys is not None and doc.num_units
    ]
    return choose_units(documents, budget)


def build_document(
    index: int,
    original: str,
    doc: DocumentTokens | None,
    raw_scores: np.ndarray,
    kept_units: np.ndarray,
    separator: str,
    costs: np.ndarray | None = None,
) -> CompressedDocument:
    """Turn kept units into verbatim, word-snapped character spans and the joined text
    (token counts in ``costs``, the budget's tokens; draft tokens without them)."""
    if doc is None:  # empty or whitespace-only: passed through untouched
        spans = [(0, len(original))] if original else []
        return CompressedDocument(
            index=index,
            original=original,
            text=original,
            spans=spans,
            original_tokens=0,
            kept_tokens=0,
            relevance=0.0,
        )
    sizes = doc.unit_sizes if costs is None else costs
    pieces: list[tuple[int, int]] = []
    kept_tokens = int(sizes[kept_units].sum()) if kept_units.size else 0
    # Whole units: runs of consecutive unit indices form one span.
    run_start = None
    for position, unit in enumerate(kept_units.tolist()):
        if run_start is None:
            run_start = unit
        is_last = position == len(kept_units) - 1
        if is_last or kept_units[position + 1] != unit + 1:
            pieces.append((int(doc.unit_char_starts[run_start]), doc.unit_char_end(unit)))
            run_start = None
    spans = merge_spans(original, pieces, doc.boundaries)
    return CompressedDocument(
        index=index,
        original=original,
        text=separator.join(original[start:end] for start, end in spans),
        spans=spans,
        original_tokens=int(sizes.sum()),
        kept_tokens=kept_tokens,
        relevance=float(raw_scores.max()) if raw_scores.size else 0.0,
    )
