"""RULER-style synthetic needle-in-a-haystack items, generated from a seed with no downloads.

Why synthetic
-------------
Real QA data mixes two questions: can the compressor find the evidence, and is the evidence
hard to recognise? A needle ("The special magic number for X is N.") hidden in unrelated
filler isolates the first one, at any context length and depth, for free. The filler is
assembled from small built-in word lists and sentence templates, so it reads as plain
English, never repeats a sentence verbatim within a haystack, and never mentions magic
numbers; the only token sequence that answers the question is the needle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

NEEDLE_TEMPLATE = "The special magic number for {key} is {value}."
QUESTION_TEMPLATE = "What is the special magic number for {key}?"

_SUBJECTS = (
    "the old farmer", "a young teacher", "the baker", "my neighbour", "the river guide",
    "a tired student", "the mayor", "our cousin", "the painter", "a travelling merchant",
    "the librarian", "the fisherman", "a quiet engineer", "the gardener", "the ship's cook",
    "a retired nurse", "the shepherd", "the town clerk", "a curious child", "the carpenter",
)  # fmt: skip
_VERBS = (
    "carried", "repaired", "painted", "sold", "described", "admired", "collected",
    "cleaned", "measured", "borrowed", "wrapped", "counted", "sketched", "polished",
    "ordered", "packed", "inspected", "returned", "planted", "photographed",
)  # fmt: skip
_OBJECTS = (
    "a wooden chair", "the blue kettle", "some fresh bread", "an old map", "the garden gate",
    "a basket of apples", "the church bell", "a pair of boots", "the kitchen window",
    "a stack of letters", "the village clock", "a woollen blanket", "the broken fence",
    "a jar of honey", "the little boat", "a box of candles", "the stone bridge",
    "a bundle of firewood", "the copper lamp", "a sack of flour",
)  # fmt: skip
_PLACES = (
    "near the harbour", "behind the mill", "in the market square", "by the old well",
    "at the edge of the forest", "on the hill road", "beside the bakery", "in the schoolyard",
    "under the chestnut tree", "along the canal", "outside the post office", "in the valley",
    "at the railway station", "by the quiet lake", "in the orchard", "on the north shore",
)  # fmt: skip
_TIMES = (
    "early in the morning", "after lunch", "before the storm", "on a cold Sunday",
    "late in the evening", "during the spring fair", "at dawn", "one rainy afternoon",
    "in the middle of winter", "last autumn", "at midday", "on market day",
)  # fmt: skip
_ADJECTIVES = (
    "calm", "busy", "dusty", "bright", "crowded", "narrow", "peaceful", "windy", "cheerful",
    "muddy", "sunny", "noisy", "gentle", "foggy", "humble", "lively",
)  # fmt: skip
_FEELINGS = (
    "was glad", "felt proud", "seemed surprised", "was a little worried", "laughed",
    "said nothing", "smiled", "sighed", "looked pleased", "was in no hurry",
)  # fmt: skip
_SENTENCE_TEMPLATES = (
    "{Subject} {verb} {object} {place} {time}.",
    "{Time}, {subject} {verb} {object} {place}.",
    "{Place}, {subject} {verb} {object} and {feeling}.",
    "The streets {place} were {adjective} {time}, so {subject} {verb} {object}.",
    "{Subject} {feeling} after {subject2} {verb} {object}.",
    "Nobody remembers why {subject} {verb} {object} {time}.",
    "It was a {adjective} day {place}, and {subject} {verb} {object}.",
    "{Subject} and {subject2} {verb} {object} together {place}.",
)  # fmt: skip
_KEY_WORDS = (
    "amber", "basil", "cedar", "delta", "ember", "falcon", "granite", "harbor", "indigo",
    "juniper", "kestrel", "lantern", "meadow", "nectar", "onyx", "pepper", "quartz", "raven",
    "saffron", "thistle", "umber", "velvet", "willow", "yarrow", "zephyr",
)  # fmt: skip


class Tokenizer(Protocol):
    """What the generator needs from a tokenizer: counting tokens of a text."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class NeedleSample:
    """A haystack split into passages, with the question whose answer is the needle.

    Attributes
    ----------
    documents
        Passages of about ``passage_tokens`` tokens each, cut at sentence boundaries.
    question, answer
        The question about the needle and its answer (the magic number, as text).
    needle
        The needle sentence exactly as it appears in one of ``documents``.
    depth
        Requested relative position of the needle, 0 (start) to 1 (end).
    needle_document
        Index of the passage that holds the needle.
    """

    documents: tuple[str, ...]
    question: str
    answer: str
    needle: str
    depth: float
    needle_document: int


def _cap(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case the rest)."""
    return text[:1].upper() + text[1:]


def filler_sentence(rng: random.Random) -> str:
    """One plain English sentence drawn from the built-in templates and word lists."""
    subject, subject2 = rng.sample(_SUBJECTS, 2)
    place, time = rng.choice(_PLACES), rng.choice(_TIMES)
    return rng.choice(_SENTENCE_TEMPLATES).format(
        Subject=_cap(subject),
        subject=subject,
        subject2=subject2,
        verb=rng.choice(_VERBS),
        object=rng.choice(_OBJECTS),
        Place=_cap(place),
        place=place,
        Time=_cap(time),
        time=time,
        adjective=rng.choice(_ADJECTIVES),
        feeling=rng.choice(_FEELINGS),
    )


def _count(tokenizer: Tokenizer, sentence: str) -> int:
    """Tokens a sentence adds when it follows another one after a space."""
    return len(tokenizer.encode(" " + sentence, add_special_tokens=False))


def haystack(target_tokens: int, tokenizer: Tokenizer, rng: random.Random) -> list[tuple[str, int]]:
    """Distinct filler sentences with their token counts, about ``target_tokens`` in total."""
    sentences: list[tuple[str, int]] = []
    seen: set[str] = set()
    total = 0
    while total < target_tokens:
        sentence = filler_sentence(rng)
        if sentence in seen:  # the combinations run to millions; repeats are rare
            continue
        seen.add(sentence)
        count = _count(tokenizer, sentence)
        sentences.append((sentence, count))
        total += count
    return sentences


def _passages(sentences: list[tuple[str, int]], passage_tokens: int) -> list[list[str]]:
    """Group sentences greedily into passages of about ``passage_tokens`` tokens."""
    passages: list[list[str]] = [[]]
    size = 0
    for sentence, count in sentences:
        if passages[-1] and size + count > passage_tokens:
            passages.append([])
            size = 0
        passages[-1].append(sentence)
        size += count
    return passages


def make_needle(rng: random.Random) -> tuple[str, str]:
    """A random ``(key, value)``: a two-word key such as ``"amber-willow"`` and a 7-digit number."""
    first, second = rng.sample(_KEY_WORDS, 2)
    return f"{first}-{second}", str(rng.randrange(1_000_000, 10_000_000))


def single_needle(
    target_tokens: int,
    tokenizer: Tokenizer,
    seed: int,
    depth: float,
    *,
    passage_tokens: int = 300,
) -> NeedleSample:
    """One needle hidden at relative ``depth`` in about ``target_tokens`` tokens of filler.

    Parameters
    ----------
    target_tokens
        Haystack length in ``tokenizer`` tokens (the needle adds a dozen more).
    tokenizer
        Counts tokens, so lengths match the model that will read the text.
    seed
        Same seed, same tokenizer, same arguments: same sample.
    depth
        0 puts the needle before the first filler sentence, 1 after the last one.
    passage_tokens
        Approximate passage length; passages are cut between sentences.

    Raises
    ------
    ValueError
        If ``depth`` is outside [0, 1] or a length is not positive.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if target_tokens < 1 or passage_tokens < 1:
        raise ValueError("target_tokens and passage_tokens must be positive")
    rng = random.Random(seed)
    key, value = make_needle(rng)
    needle = NEEDLE_TEMPLATE.format(key=key, value=value)
    sentences = haystack(target_tokens, tokenizer, rng)
    sentences.insert(round(depth * len(sentences)), (needle, _count(tokenizer, needle)))
    passages = _passages(sentences, passage_tokens)
    holder = next(index for index, passage in enumerate(passages) if needle in passage)
    return NeedleSample(
        documents=tuple(" ".join(passage) for passage in passages),
        question=QUESTION_TEMPLATE.format(key=key),
        answer=value,
        needle=needle,
        depth=depth,
        needle_document=holder,
    )
