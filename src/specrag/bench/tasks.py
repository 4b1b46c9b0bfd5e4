"""Benchmark items: one shape for Quoref multi-document QA and the RULER-style tasks.

Why one shape
-------------
Every method, budget and model of a run must see exactly the same inputs, and the runner
must not care where an item came from. :func:`build_items` turns (task, length, seed) into a
deterministic list of :class:`BenchItem`; lengths are counted in the *target's* tokens,
because the budget every method is held to is counted there.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .multihop import multihop_sample
from .needle import Tokenizer
from .quoref import QuorefExample, load_quoref, multi_doc_items
from .ruler import RULER_TASKS, ruler_sample

TASKS = ("quoref", "multihop", *RULER_TASKS)
QUOREF_POOL = 300
"""Quoref items are drawn from a pool of this many, then cut to the limit (prefix-stable)."""

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "that",
        "this",
        "with",
        "from",
        "into",
        "onto",
        "his",
        "her",
        "their",
        "its",
        "they",
        "them",
        "him",
        "she",
        "he",
        "has",
        "had",
        "have",
        "does",
        "did",
        "name",
        "names",
        "full",
        "first",
        "last",
        "person",
        "people",
        "whose",
        "than",
        "then",
        "there",
        "been",
        "being",
        "also",
        "about",
        "after",
        "before",
    ]
)


@dataclass(frozen=True)
class BenchItem:
    """One question over a list of documents.

    Attributes
    ----------
    task, item_id
        Where the item comes from; ``item_id`` is unique within a run and stable across runs
        with the same seed, which is what makes cached results reusable.
    length
        Requested context length (target tokens); the actual length is within a passage.
    documents, question, answers
        The input; answers are verbatim in the documents.
    require_all
        Whether containment needs every answer (multi-value, variable tracking).
    evidence
        Phrases that must all survive compression for the answer to be derivable (multi-hop:
        both facts); empty where the answer itself is the evidence.
    meta
        Extra labels, e.g. ``qtype`` (``"coref"`` / ``"lexical"``) and ``gold_index`` for Quoref.
    """

    task: str
    item_id: str
    length: int
    documents: tuple[str, ...]
    question: str
    answers: tuple[str, ...]
    require_all: bool = False
    meta: dict[str, object] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()


def content_words(text: str) -> set[str]:
    """Lower-cased words of three or more letters that are not question or function words."""
    return {word.lower() for word in _WORD.findall(text) if len(word) > 2 and word.lower() not in _STOP}


def question_type(question: str, passage: str, answers: Sequence[str]) -> str:
    """``"lexical"`` when the sentence holding the answer shares a content word with the
    question, else ``"coref"``.

    Why: Quoref questions are written to need coreference ("What is the first name of the
    person who ...?" where the passage says "he"). When the answer's own sentence shares no
    content word with the question, finding it by word overlap or embedding similarity cannot
    work, and a compressor needs to follow the reference; such items are reported apart.
    """
    asked = content_words(question) - {word.lower() for answer in answers for word in _WORD.findall(answer)}
    for sentence in _SENTENCE_END.split(passage):
        holds_answer = any(answer.casefold() in sentence.casefold() for answer in answers)
        if holds_answer and asked & content_words(sentence):
            return "lexical"
    return "coref"


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def quoref_items(
    n: int,
    length: int,
    tokenizer: Tokenizer,
    seed: int,
    examples: Sequence[QuorefExample] | None = None,
) -> list[BenchItem]:
    """Quoref questions with their gold passage among distractors, about ``length`` tokens.

    The number of distractors is fixed per length (from the mean passage length in target
    tokens, measured on a seeded sample), so the gold position is balanced over the slots by
    :func:`~specrag.bench.quoref.multi_doc_items`.
    """
    pool = list(examples) if examples is not None else load_quoref(progress=False)
    rng = random.Random(seed)
    sample = rng.sample(pool, min(len(pool), 50))
    mean = sum(_count(tokenizer, example.passage) for example in sample) / max(1, len(sample))
    distractors = max(1, math.ceil(length / max(mean, 1.0)) - 1)
    # Built from a fixed-size pool and cut to ``n``: a run with a smaller limit sees a prefix of
    # a larger run's items, so cached results stay valid and subsets are paired.
    size = max(n, QUOREF_POOL)
    usable = sum(1 for e in pool if not e.multi_span and all(a in e.passage for a in e.answers))
    built = multi_doc_items(min(size, max(n, usable)), seed=seed + length, distractors=distractors, examples=pool)[:n]
    items = []
    for index, item in enumerate(built):
        qtype = question_type(item.question, item.gold_document, item.answers)
        items.append(
            BenchItem(
                task="quoref",
                item_id=f"quoref-{length}-{seed}-{index}",
                length=length,
                documents=item.documents,
                question=item.question,
                answers=item.answers,
                meta={"gold_index": item.gold_index, "qtype": qtype},
            )
        )
    return items


def build_items(
    tasks: Sequence[str],
    lengths: Sequence[int],
    limit: int,
    seed: int,
    tokenizer: Tokenizer,
    *,
    quoref_examples: Sequence[QuorefExample] | None = None,
    passage_tokens: int = 300,
    start: int = 0,
    indices: Sequence[int] | None = None,
) -> list[BenchItem]:
    """``limit`` items per (task, length), deterministic in ``seed`` and the tokenizer.

    ``start`` drops the first items of each (task, length), so that processes given
    ``start=0, limit=20`` and ``start=20, limit=40`` share one run's items between them:
    item ``i`` is the same item whatever the limit (a prefix-stable list). ``indices``
    keeps only the listed items of the ``limit`` (say, the ones a draft can read), the
    same items a full run would build at those indices.

    Raises
    ------
    ValueError
        For an unknown task, a non-positive length or limit, a start outside ``[0, limit)``,
        or indices that are empty, repeated, outside ``[0, limit)`` or given with a start.
    """
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {TASKS}")
    if limit < 1 or any(length < 1 for length in lengths):
        raise ValueError("limit and lengths must be positive")
    if not 0 <= start < limit:
        raise ValueError(f"start={start} leaves no items: it must be at least 0 and below limit={limit}")
    chosen = _chosen_indices(limit, start, indices)
    items: list[BenchItem] = []
    for task in tasks:
        for length in lengths:
            items.extend(_task_items(task, length, chosen, seed, tokenizer, quoref_examples, passage_tokens))
    return items


def _chosen_indices(limit: int, start: int, indices: Sequence[int] | None) -> list[int]:
    """The item indices one (task, length) runs: ``start..limit-1``, or ``indices`` sorted."""
    if indices is None:
        return list(range(start, limit))
    if start:
        raise ValueError("give item indices or a start, not both")
    outside = [index for index in indices if not 0 <= index < limit]
    if not indices or outside or len(set(indices)) != len(indices):
        raise ValueError(f"item indices must be distinct and in [0, {limit}) (below the limit), got {list(indices)}")
    return sorted(indices)


def _task_items(
    task: str,
    length: int,
    indices: Sequence[int],
    seed: int,
    tokenizer: Tokenizer,
    quoref_examples: Sequence[QuorefExample] | None,
    passage_tokens: int,
) -> list[BenchItem]:
    """Items ``indices`` (ascending) of one (task, length); item ``i`` does not depend on
    the others (Quoref's list is prefix-stable, so it is built up to the last index)."""
    if task == "quoref":
        built = quoref_items(indices[-1] + 1, length, tokenizer, seed, quoref_examples)
        return [built[index] for index in indices if index < len(built)]
    items: list[BenchItem] = []
    for index in indices:
        item_id = f"{task}-{length}-{seed}-{index}"
        if task == "multihop":
            hop = multihop_sample(length, tokenizer, seed * 100_003 + index)
            items.append(
                BenchItem(
                    task=task,
                    item_id=item_id,
                    length=length,
                    documents=hop.documents,
                    question=hop.question,
                    answers=hop.answers,
                    meta={"qtype": hop.qtype, "relation": hop.relation},
                    evidence=hop.evidence,
                )
            )
            continue
        sample = ruler_sample(task, length, tokenizer, seed * 100_003 + index, passage_tokens=passage_tokens)
        items.append(
            BenchItem(
                task=task,
                item_id=item_id,
                length=length,
                documents=sample.documents,
                question=sample.question,
                answers=sample.answers,
                require_all=sample.require_all,
            )
        )
    return items
