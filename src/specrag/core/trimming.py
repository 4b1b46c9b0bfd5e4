"""Fitting a chat history to a token budget with SpecPC, on plain strings.

An agent re-sends its whole history every turn; most of it is old tool output. The
framework adapters (LangChain's ``trim_messages_with_specpc``) turn messages into the plain
pieces here and back; the decisions live in this module:

- :func:`split_history`: which messages stay verbatim (system messages, the last turn,
  short messages) and the budget left for the rest;
- :func:`trim_pieces`: one SpecPC call over the remaining text pieces, then the fit loop
  that pays for separators, placeholders and re-tokenisation by giving up the shortest
  spans until the rebuilt history fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .specpc import SpecPC

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class HistoryPlan:
    """Which messages may shrink, and the draft tokens they may spend together.

    Attributes
    ----------
    shrinkable
        Indices of the messages whose text is compressed, oldest first.
    budget
        ``max_tokens`` minus the verbatim messages' tokens, clamped at 0.
    """

    shrinkable: list[int]
    budget: int


def split_history(
    tokens: Sequence[int],
    *,
    verbatim: Sequence[bool],
    max_tokens: int,
    short_message_tokens: int,
) -> HistoryPlan:
    """Plan a trim: messages marked ``verbatim`` and those of at most
    ``short_message_tokens`` tokens stay as they are (trimming them saves little and a
    placeholder could cost more); the others share what is left of ``max_tokens``."""
    shrinkable = [
        index
        for index, (count, keep) in enumerate(zip(tokens, verbatim, strict=True))
        if not keep and count > short_message_tokens
    ]
    chosen = set(shrinkable)
    fixed = sum(count for index, count in enumerate(tokens) if index not in chosen)
    return HistoryPlan(shrinkable=shrinkable, budget=max(0, max_tokens - fixed))


def trim_pieces(
    pieces: Sequence[str],
    question: str,
    *,
    compressor: SpecPC,
    budget: int,
    spent: Callable[[list[str]], int],
    count: Callable[[str], int],
) -> list[str]:
    """Compress ``pieces`` for ``question`` so that the rebuilt history costs ``<= budget``.

    Parameters
    ----------
    pieces
        The shrinkable messages' text pieces, in order.
    compressor
        The SpecPC that scores (its budget counts kept draft tokens only).
    budget
        Draft tokens the rebuilt pieces may cost in all.
    spent
        What the history built from candidate piece texts costs (the adapter adds its
        placeholders for emptied messages and counts as its framework renders them).
    count
        Draft tokens of one text (to rank spans by cost and price the separator).

    Returns
    -------
    list[str]
        One text per piece: its kept spans, verbatim and in order, joined by the
        compressor's separator; ``""`` where nothing of it is kept. May still cost more
        than ``budget`` when even an empty history does (placeholders); the caller decides.
    """
    result = compressor.compress(list(pieces), question, max_tokens=budget)
    separator = result.separator
    kept: list[Spans] = [list(document.spans) for document in result.documents]

    def render(spans: list[Spans]) -> list[str]:
        return [separator.join(text[a:b] for a, b in piece) for text, piece in zip(pieces, spans, strict=True)]

    # The draft's budget counts kept tokens only; separators, placeholders and
    # re-tokenisation where spans meet cost more. Pay for them by giving up the shortest
    # spans (the most fragmented, least coherent pieces) until the text fits; every round
    # removes at least one span, so this ends.
    separator_cost = count(separator)
    texts = render(kept)
    cost = spent(texts)
    while cost > budget and any(kept):
        by_cost = sorted(
            (count(pieces[source][a:b]), source, position)
            for source, spans in enumerate(kept)
            for position, (a, b) in enumerate(spans)
        )
        dropping: set[tuple[int, int]] = set()
        saved = 0
        for span_cost, source, position in by_cost:
            dropping.add((source, position))
            saved += span_cost + separator_cost
            if saved >= cost - budget:
                break
        kept = [
            [span for position, span in enumerate(spans) if (source, position) not in dropping]
            for source, spans in enumerate(kept)
        ]
        texts = render(kept)
        cost = spent(texts)
    return texts
