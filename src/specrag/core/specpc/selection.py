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
        if cost <= remaining:
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
        Budget tokens left over: smaller than every unit that was not kept.
    """

    units: dict[int, np.ndarray]
    unspent: int


def select_units(
    tokenized: Sequence[DocumentTokens | None], keys: Sequence[TokenKeys | None], budget: int
) -> Selection:
    """Choose kept units across all documents under one global ``budget`` of draft tokens.

    Units rank by their tokens' best value of each key (first key most significant, then
    position); whole units are taken while they fit. What no remaining unit fits into
    stays unspent: no unit is ever cut (see the module notes).
    """
    doc_ids: list[np.ndarray] = []
    unit_ids: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    unit_keys: list[list[np.ndarray]] = []
    for index, token_keys in enumerate(keys):
        doc = tokenized[index]
        if doc is None or token_keys is None:
            continue
        firsts = doc.unit_first_token
        doc_ids.append(np.full(doc.num_units, index))
        unit_ids.append(np.arange(doc.num_units))
        sizes.append(doc.unit_sizes)
        if not unit_keys:
            unit_keys = [[] for _ in token_keys]
        for out, key in zip(unit_keys, token_keys, strict=True):
            out.append(np.maximum.reduceat(key, firsts))
    if not doc_ids or budget == 0:
        return Selection({}, budget)
    ranking = rank_units(
        np.concatenate(doc_ids),
        np.concatenate(unit_ids),
        np.concatenate(sizes),
        [np.concatenate(key) for key in unit_keys],
    )
    kept, remaining = fill_budget(ranking, budget)
    kept_by_doc: dict[int, list[int]] = {}
    for position in np.nonzero(kept)[0]:
        kept_by_doc.setdefault(int(ranking.document[position]), []).append(int(ranking.unit[position]))
    return Selection({doc: np.sort(np.asarray(units)) for doc, units in kept_by_doc.items()}, remaining)


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
