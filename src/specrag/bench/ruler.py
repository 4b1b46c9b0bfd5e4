"""RULER-style synthetic tasks beyond the single needle: multi-key, multi-value, variable tracking.

Why these four
--------------
RULER (Hsieh et al., 2024) showed that a single needle is too easy to tell long-context
methods apart. Distractor needles (*multi-key*) test whether a compressor keeps the needle the
question names rather than any needle; several values for one key (*multi-value*) test whether
it keeps *all* the evidence; a chain of assignments (*variable tracking*) tests multi-hop
evidence whose later hops do not share words with the question. All are built from
:mod:`specrag.bench.needle`'s filler, from a seed, with no downloads.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from .needle import (
    NEEDLE_TEMPLATE,
    QUESTION_TEMPLATE,
    Tokenizer,
    _passages,
    haystack,
    make_needle,
    single_needle,
)

RULER_TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "vt")
"""Task names understood by :func:`ruler_sample`."""


@dataclass(frozen=True)
class RulerSample:
    """One synthetic item: passages, question, answers and whether all answers are needed."""

    documents: tuple[str, ...]
    question: str
    answers: tuple[str, ...]
    require_all: bool


def _hide(
    target_tokens: int,
    tokenizer: Tokenizer,
    rng: random.Random,
    inserts: list[str],
    passage_tokens: int,
) -> tuple[str, ...]:
    """Filler of about ``target_tokens`` tokens with ``inserts`` placed in order at random depths."""
    sentences = haystack(target_tokens, tokenizer, rng)
    positions = sorted(rng.randrange(len(sentences) + 1) for _ in inserts)
    for offset, (position, text) in enumerate(zip(positions, inserts)):
        sentences.insert(position + offset, (text, len(tokenizer.encode(" " + text, add_special_tokens=False))))
    return tuple(" ".join(passage) for passage in _passages(sentences, passage_tokens))


def _variable(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=5))


def ruler_sample(
    task: str, target_tokens: int, tokenizer: Tokenizer, seed: int, *, passage_tokens: int = 300
) -> RulerSample:
    """Build one item of ``task`` (see :data:`RULER_TASKS`) at about ``target_tokens`` tokens.

    Same task, seed, tokenizer and length: same item, so every method and budget of a
    benchmark run sees identical inputs.

    Raises
    ------
    ValueError
        For an unknown task name.
    """
    if task not in RULER_TASKS:
        raise ValueError(f"unknown RULER task {task!r}; expected one of {RULER_TASKS}")
    rng = random.Random(f"{task}:{seed}")
    if task == "niah_single":
        sample = single_needle(target_tokens, tokenizer, seed, rng.random(), passage_tokens=passage_tokens)
        return RulerSample(sample.documents, sample.question, (sample.answer,), False)
    if task == "niah_multikey":
        needles: list[tuple[str, str]] = []
        keys: set[str] = set()
        while len(needles) < 4:
            key, value = make_needle(rng)
            if key not in keys:
                keys.add(key)
                needles.append((key, value))
        asked_key, asked_value = needles[rng.randrange(len(needles))]
        texts = [NEEDLE_TEMPLATE.format(key=key, value=value) for key, value in needles]
        rng.shuffle(texts)
        documents = _hide(target_tokens, tokenizer, rng, texts, passage_tokens)
        return RulerSample(documents, QUESTION_TEMPLATE.format(key=asked_key), (asked_value,), False)
    if task == "niah_multivalue":
        key, _ = make_needle(rng)
        values = sorted({make_needle(rng)[1] for _ in range(4)})
        texts = [NEEDLE_TEMPLATE.format(key=key, value=value) for value in values]
        documents = _hide(target_tokens, tokenizer, rng, texts, passage_tokens)
        question = f"What are all the special magic numbers for {key}? List every one."
        return RulerSample(documents, question, tuple(values), True)
    # variable tracking: VAR A = 12345, VAR B = VAR A, ... (hops in order of appearance)
    value = str(rng.randrange(10_000, 100_000))
    names: list[str] = []
    while len(names) < 4:
        name = _variable(rng)
        if name not in names:
            names.append(name)
    texts = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, len(names))]
    documents = _hide(target_tokens, tokenizer, rng, texts, passage_tokens)
    question = f"Which variables are assigned the value {value}, directly or through other variables? List all."
    return RulerSample(documents, question, tuple(names), True)
