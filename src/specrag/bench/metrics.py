"""Answer metrics for extractive QA: containment for compressed contexts, EM/F1 for answers.

Why two kinds
-------------
A compressor cannot answer; it can only keep or drop the words the answer needs. Whether the
gold answer survives in the kept text (:func:`answer_contained`) is therefore the quantity
to tune a compressor on, and it needs only the draft model. :func:`exact_match` and
:func:`token_f1` judge what a target model then *answers*, with the usual SQuAD
normalisation (case, punctuation, English articles, whitespace), so numbers are comparable
with published extractive-QA results.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def _collapse(text: str) -> str:
    """Lower-case and collapse every whitespace run to one space (casefold for non-ASCII)."""
    return " ".join(text.casefold().split())


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace.

    Answers that differ only in these respects ("The Beatles." vs "beatles") count as equal,
    the convention of SQuAD-style extractive QA evaluation.
    """
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", no_punctuation).split())


def _as_answers(answers: str | Sequence[str]) -> list[str]:
    """Accept one answer or several; refuse an empty list, which would make every score 0."""
    listed = [answers] if isinstance(answers, str) else list(answers)
    if not listed:
        raise ValueError("answers must not be empty")
    return listed


def answer_contained(text: str, answers: str | Sequence[str], *, require_all: bool = False) -> bool:
    """Whether an answer occurs in ``text``, ignoring case and whitespace differences.

    Only case and whitespace are normalised, not punctuation, because compressed text is a
    verbatim extract: the answer is either there as written or it is not, and the separator
    a compressor inserts between kept spans must not create matches.

    Parameters
    ----------
    text
        Typically the compressed context handed to the target.
    answers
        Accepted answers (any one suffices), or the spans of one multi-span answer with
        ``require_all=True``.
    require_all
        Demand every answer, for multi-span questions ("Which two ...?").
    """
    haystack = _collapse(text)
    needles = [_collapse(answer) for answer in _as_answers(answers)]
    found = [bool(needle) and needle in haystack for needle in needles]
    return all(found) if require_all else any(found)


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(answer) for answer in _as_answers(answers)))


def _f1(prediction_tokens: list[str], answer_tokens: list[str]) -> float:
    """Harmonic mean of token precision and recall (bag of words, counts respected)."""
    if not prediction_tokens or not answer_tokens:
        # SQuAD convention: two empty answers agree fully, one empty side scores 0.
        return float(prediction_tokens == answer_tokens)
    common = sum((Counter(prediction_tokens) & Counter(answer_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_tokens)
    recall = common / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """Best SQuAD token F1 of ``prediction`` against any answer, in [0, 1].

    Partial credit matters for small targets that answer "Catherine Hickson" where the gold
    answer is "Catherine".
    """
    predicted = normalize_answer(prediction).split()
    return max(_f1(predicted, normalize_answer(answer).split()) for answer in _as_answers(answers))
