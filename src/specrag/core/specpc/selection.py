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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..segmentation import DocumentTokens, merge_spans
from .grouping import group_cap, sentence_groups
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


def fill_budget(ranking: UnitRanking, budget: int, labels: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Greedily take whole units in rank order while they fit.

    ``labels`` (one per unit) name duplicates: a unit whose label an already kept unit has
    is skipped, so the budget is not spent twice on the same sentence (boilerplate repeated
    across retrieved chunks). Returns the boolean "kept" mask over units and the tokens still
    unspent (non-zero only when every unit left out is larger than what remains, or a
    duplicate; units are never cut to fill it).
    """
    kept = np.zeros(ranking.size.shape[0], dtype=bool)
    remaining = budget
    smallest_left = int(ranking.size.min()) if ranking.size.size else 0
    seen: set[str] = set()
    for index in ranking.order:
        if remaining == 0 or remaining < smallest_left:
            break
        cost = int(ranking.size[index])
        if cost > remaining:
            continue
        if labels is not None:
            if labels[index] in seen:
                continue
            seen.add(labels[index])
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


def choose_units(documents: Sequence[DocumentUnits], budget: int) -> Selection:
    """Choose kept units across all documents under one global ``budget``.

    Groups (or units, without groups) rank by their units' best value of each key (first key
    most significant, then document order) and are taken whole while they fit; an exact
    repeat of a kept group's text (case and spacing aside) is skipped. Nothing is ever cut:
    what no remaining group fits into stays unspent (see the module notes).
    """
    if not documents or budget == 0:
        return Selection({}, budget)
    doc_ids, group_ids, sizes, firsts_of = [], [], [], []
    group_keys: list[list[np.ndarray]] = [[] for _ in documents[0].keys]
    labels: list[str] | None = [] if any(d.groups is not None for d in documents) else None
    for entry in documents:
        doc = entry.doc
        groups = entry.groups if entry.groups is not None else np.arange(doc.num_units)
        firsts = np.flatnonzero(np.diff(groups, prepend=-1))
        doc_ids.append(np.full(firsts.shape[0], entry.index))
        group_ids.append(np.arange(firsts.shape[0]))
        sizes.append(np.add.reduceat(doc.unit_sizes, firsts))
        firsts_of.append((entry.index, firsts, doc.num_units))
        for out, key in zip(group_keys, entry.keys, strict=True):
            out.append(np.maximum.reduceat(np.asarray(key, dtype=np.float64), firsts))
        if labels is not None:
            labels.extend(_group_label(doc, firsts, position) for position in range(firsts.shape[0]))
    ranking = rank_units(
        np.concatenate(doc_ids),
        np.concatenate(group_ids),
        np.concatenate(sizes),
        [np.concatenate(key) for key in group_keys],
    )
    kept, remaining = fill_budget(ranking, budget, labels)
    bounds = {index: (firsts, count) for index, firsts, count in firsts_of}
    kept_by_doc: dict[int, list[np.ndarray]] = {}
    for position in np.nonzero(kept)[0]:
        document, group = int(ranking.document[position]), int(ranking.unit[position])
        firsts, count = bounds[document]
        end = int(firsts[group + 1]) if group + 1 < firsts.shape[0] else count
        kept_by_doc.setdefault(document, []).append(np.arange(int(firsts[group]), end))
    return Selection({doc: np.sort(np.concatenate(runs)) for doc, runs in kept_by_doc.items()}, remaining)


def _group_label(doc: DocumentTokens, firsts: np.ndarray, position: int) -> str:
    """A group's text with case and runs of whitespace folded: equal labels are repeats."""
    last_unit = int(firsts[position + 1]) - 1 if position + 1 < firsts.shape[0] else doc.num_units - 1
    text = doc.text[int(doc.unit_char_starts[int(firsts[position])]) : doc.unit_char_end(last_unit)]
    return " ".join(text.split()).casefold()


def select_units(
    tokenized: Sequence[DocumentTokens | None],
    keys: Sequence[TokenKeys | None],
    budget: int,
    group_tokens: int | None = None,
) -> Selection:
    """Choose kept units across all documents under one global ``budget`` of draft tokens.

    A unit's key is its tokens' best value of each per-token key. With ``group_tokens`` (the
    ``max_sentence_tokens`` of ``snap="sentence"``), units are kept in whole sentences and
    clauses (:mod:`~.grouping`), capped by :func:`~.grouping.group_cap` of the budget.
    """
    cap = group_cap(budget, group_tokens) if group_tokens is not None else None
    documents = [
        DocumentUnits(
            index=index,
            doc=doc,
            keys=[np.maximum.reduceat(key, doc.unit_first_token) for key in token_keys],
            groups=sentence_groups(doc, cap) if cap is not None else None,
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
) -> CompressedDocument:
    """Turn kept units into verbatim, word-snapped character spans and the joined text."""
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
    sizes = doc.unit_sizes
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
        original_tokens=doc.num_tokens,
        kept_tokens=kept_tokens,
        relevance=float(raw_scores.max()) if raw_scores.size else 0.0,
    )
