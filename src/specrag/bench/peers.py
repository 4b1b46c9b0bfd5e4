"""What RAG users already have, run through the peers' own code: the bar SpecPC must clear.

``lc_filter``  LangChain's contextual compression as its docs show it: a
               ``DocumentCompressorPipeline`` of ``CharacterTextSplitter(separator=". ")``
               and ``EmbeddingsFilter`` over all-MiniLM-L6-v2 (``langchain-huggingface``);
               chunks rank by the filter's own ``query_similarity_score`` and are taken best
               first until the budget (``k`` fitted to the budget).
``bm25``       Sentences ranked by BM25 (``rank-bm25``'s Okapi BM25) against the question.
``li_optimizer``  LlamaIndex's ``SentenceEmbeddingOptimizer`` as its docs show it, over
               all-MiniLM-L6-v2 (``llama-index-embeddings-huggingface``), one node per
               document, ``percentile_cutoff`` set to the budget and its default context (one
               sentence before and after each kept one).

The first two score sentences; every unit of a sentence gets its sentence's score, and the
shared selector (:func:`specrag.bench.budget.select`) fills the budget in target tokens, as
for every other method. ``li_optimizer`` cannot be held to a budget (it keeps
``int(n * percentile_cutoff)`` sentences per node, each with its neighbours, repeated where
windows overlap, and *all* of a node whose ``n * cutoff`` rounds down to 0), so its row
reports what it really returns: its own text, counted in target tokens, over budget or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.embeddings import minilm_dir
from ..core.sentences import index_in_spans, sentence_spans
from .budget import Selection, Units, budget_tokens, unit_positions
from .tasks import BenchItem

Keys = list[list[np.ndarray]]
_WORDS = re.compile(r"\w+")


def _spread(units: Units, index: int, spans: Sequence[tuple[int, int]], scores: Sequence[float]) -> np.ndarray:
    """Per unit of document ``index``, the score of the span its first character is in."""
    starts, _ = units.unit_bounds(index)
    if not spans:
        return np.full(starts.shape[0], -1e9)
    which = index_in_spans(list(spans), starts)
    return np.asarray(scores, dtype=np.float64)[which]


class LangChainEmbeddingsFilter:
    """LangChain's splitter + ``EmbeddingsFilter`` pipeline (see the module notes)."""

    name = "lc_filter"

    def __init__(self, chunk_size: int = 300) -> None:
        from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline, EmbeddingsFilter
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_text_splitters import CharacterTextSplitter

        embeddings = HuggingFaceEmbeddings(
            model_name=str(minilm_dir()), model_kwargs={"device": "cpu"}, encode_kwargs={"normalize_embeddings": True}
        )
        self._splitter = CharacterTextSplitter(
            separator=". ", chunk_size=chunk_size, chunk_overlap=0, keep_separator="end"
        )
        self._filter_type = EmbeddingsFilter
        self._pipeline_type = DocumentCompressorPipeline
        self._embeddings = embeddings

    def score(self, item: BenchItem, units: Units) -> Keys:
        from langchain_core.documents import Document

        chunks: list[tuple[int, int, int]] = []  # (document, start, end)
        texts: list[Document] = []
        for index, text in enumerate(units.documents):
            cursor = 0
            for piece in self._splitter.split_text(text):
                start = text.find(piece, cursor)
                if start < 0:  # the splitter changed the text: refuse rather than guess
                    raise RuntimeError(f"CharacterTextSplitter returned text not in document {index}")
                chunks.append((index, start, start + len(piece)))
                texts.append(Document(page_content=piece, metadata={"chunk": len(chunks) - 1}))
                cursor = start + len(piece)
        pipeline = self._pipeline_type(
            transformers=[self._filter_type(embeddings=self._embeddings, k=max(1, len(texts)))]
        )
        ranked = pipeline.compress_documents(texts, item.question)
        similarity = np.full(len(chunks), -1.0)
        for document in ranked:
            state = getattr(document, "state", None)  # EmbeddingsFilter returns documents with state
            if not isinstance(state, dict) or "query_similarity_score" not in state:
                raise RuntimeError("EmbeddingsFilter returned documents without query_similarity_score")
            similarity[document.metadata["chunk"]] = float(state["query_similarity_score"])
        primary = []
        for index in range(len(units.documents)):
            mine = [(c, (a, b)) for c, (d, a, b) in enumerate(chunks) if d == index]
            primary.append(_spread(units, index, [span for _, span in mine], [similarity[c] for c, _ in mine]))
        return [primary, unit_positions(units)]


class BM25Sentences:
    """Sentences ranked by Okapi BM25 (``rank-bm25``) over all sentences of the item."""

    name = "bm25"

    def score(self, item: BenchItem, units: Units) -> Keys:
        from rank_bm25 import BM25Okapi

        spans = [sentence_spans(text) for text in units.documents]
        corpus: list[list[str]] = [
            _WORDS.findall(text[a:b].lower()) or [""] for text, doc in zip(units.documents, spans) for a, b in doc
        ]
        scores: Any = BM25Okapi(corpus).get_scores(_WORDS.findall(item.question.lower())) if corpus else []
        primary, cursor = [], 0
        for index, doc in enumerate(spans):
            primary.append(_spread(units, index, doc, scores[cursor : cursor + len(doc)]))
            cursor += len(doc)
        return [primary, unit_positions(units)]


class LlamaIndexOptimizer:
    """LlamaIndex's ``SentenceEmbeddingOptimizer``, returning its own text (see the module notes)."""

    name = "li_optimizer"

    def __init__(self) -> None:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        self._embed_model = HuggingFaceEmbedding(model_name=str(minilm_dir()), device="cpu")

    def compress(self, item: BenchItem, units: Units, ratio: float, count_tokens: Callable[[str], int]) -> Selection:
        """Run the optimizer with ``percentile_cutoff=ratio``; the kept text is what it returns."""
        from llama_index.core.postprocessor import SentenceEmbeddingOptimizer
        from llama_index.core.schema import NodeWithScore, TextNode

        present = [index for index, text in enumerate(units.documents) if text.strip()]
        nodes = [NodeWithScore(node=TextNode(text=units.documents[index]), score=1.0) for index in present]
        optimizer = SentenceEmbeddingOptimizer(embed_model=self._embed_model, percentile_cutoff=ratio)
        returned = optimizer.postprocess_nodes(nodes, query_str=item.question) if nodes else []
        texts = [""] * len(units.documents)
        for index, node in zip(present, returned, strict=True):
            texts[index] = node.node.get_content()
        kept = sum(count_tokens(text) for text in texts if text)
        return Selection(tuple(texts), tuple(() for _ in texts), kept, units.total_tokens, budget_tokens(units, ratio))


PEER_METHODS = ("lc_filter", "bm25", "li_optimizer")


def make_peer(name: str) -> LangChainEmbeddingsFilter | BM25Sentences | LlamaIndexOptimizer:
    """Build peer ``name`` (see :data:`PEER_METHODS`)."""
    if name == "lc_filter":
        return LangChainEmbeddingsFilter()
    if name == "bm25":
        return BM25Sentences()
    if name == "li_optimizer":
        return LlamaIndexOptimizer()
    raise ValueError(f"unknown peer {name!r}; expected one of {PEER_METHODS}")
