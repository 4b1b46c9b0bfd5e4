"""What the example scripts share: options, the bundled corpus, MiniLM vectors, answering, output.

Kept out of the scripts so each one shows only its framework's wiring. The heavy lifting
(corpus, offline all-MiniLM-L6-v2, greedy chat-template answering) lives in
:mod:`specrag.demo`, which ``specrag demo`` uses too; this module adapts it to the scripts.
Framework wrappers (a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``/``CustomLLM``)
stay in the scripts on purpose: they are the few lines a reader comes to copy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from specrag import load_model, load_tokenizer
from specrag.core.embeddings import embed
from specrag.core.specpc import DEFAULT_DRAFT
from specrag.demo import (
    DEFAULT_ANSWERER,
    DEFAULT_INSTRUCTION,
    Corpus,
    Passage,
    load_corpus,
)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "Corpus",
    "Passage",
    "Question",
    "load_corpus",
    "minilm_vectors",
    "parse_args",
    "pick_question",
    "print_answer",
    "print_report",
]


def parse_args(description: str, argv: Sequence[str] | None = None, *, answering: bool = True) -> argparse.Namespace:
    """The options every example takes; ``answering`` adds --llm/--no-answer/--max-new-tokens."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--question", "-q", help="question to ask; default a bundled one")
    parser.add_argument("--keep", type=float, default=0.25, help="share of draft tokens kept")
    parser.add_argument("--top-k", type=int, default=4, help="passages to retrieve")
    parser.add_argument("--draft", default=DEFAULT_DRAFT, help="SpecPC draft model")
    if answering:
        parser.add_argument("--llm", default=DEFAULT_ANSWERER, help="answering model: bundle name or folder")
        parser.add_argument("--no-answer", action="store_true", help="stop after compression")
        parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer")
        parser.add_argument(
            "--kv-budget",
            type=int,
            default=512,
            help="SpecKV cache entries per layer for the answering model (prompts longer than "
            "this are evicted, guided by the draft's answer)",
        )
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Question:
    """The question asked, and the expected answer when it is one of the bundled questions."""

    text: str
    expected: str | None


def pick_question(corpus: Corpus, text: str | None, default_index: int = 0) -> Question:
    """``text`` if given (with its answer when it is a bundled question), else a bundled one."""
    if text is None:
        chosen = corpus.questions[default_index]
        return Question(chosen.question, chosen.answer)
    known = corpus.find_question(text)
    return Question(text, known.answer if known else None)


def minilm_vectors(texts: Sequence[str]) -> list[list[float]]:
    """all-MiniLM-L6-v2 embeddings as plain lists, the shape both frameworks expect."""
    return embed(texts).tolist()


def _draft_tokens(draft: str, text: str) -> int:
    """Draft tokens in ``text``, counted as SpecPC counts document tokens.

    ``load_model`` caches per (source, device, dtype), so this is the very draft the
    adapter loaded, not a second copy.
    """
    return len(load_model(draft).tokenizer.encode(text, add_special_tokens=False))


def _counter(name: str) -> Callable[[str], int]:
    """Tokens of a text in the tokenizer of ``name`` (a bundle, folder or hub id)."""
    tokenizer = load_tokenizer(name)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def print_report(
    question: Question,
    retrieved: Sequence[tuple[str, str, str]],
    kept: dict[str, int],
    context: str,
    draft: str,
    counted_in: str | None = None,
) -> None:
    """Print retrieved vs kept tokens per passage, the totals and the compressed context.

    ``retrieved`` holds ``(id, title, text)`` of what the retriever returned; ``kept`` maps
    the ids that survived compression to their kept tokens, as the adapter's metadata
    reports them (dropped passages are absent). ``counted_in``: the tokenizer the budget
    counts in (SpecPC's ``target_tokenizer``), when it is not the draft's.
    """
    counter = _counter(counted_in) if counted_in else None
    print(f"Question: {question.text}")
    total = 0
    print(f"Retrieved {len(retrieved)} passages:")
    for passage_id, title, text in retrieved:
        tokens = counter(text) if counter else _draft_tokens(draft, text)
        total += tokens
        fate = f"kept {kept[passage_id]}" if passage_id in kept else "dropped"
        print(f"  {passage_id:<20} {tokens:>4} tokens -> {fate:<8}  {title}")
    kept_total = sum(kept.values())
    share = kept_total / total if total else 1.0
    label = "the target's tokenizer" if counted_in else f"{draft} tokenizer"
    print(f"Tokens: {total} retrieved -> {kept_total} kept ({share:.0%}, {label})")
    print("Compressed context:\n----")
    print(context)
    print("----")
    if question.expected is not None:
        survived = "yes" if question.expected in context else "no"
        print(f"Expected answer: {question.expected} (in the compressed context: {survived})")


def print_answer(llm: str, answer: str) -> None:
    """Print the answering model's reply."""
    print(f"Answer ({llm}): {answer}")
