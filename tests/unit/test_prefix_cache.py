"""Prefix reuse: follow-ups forward only new tokens, and score as a fresh pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from specrag import LoadedModel, SpecPC
from specrag.core.specpc.prefix_cache import PrefixCache, common_prefix

DOCS = [
    "The Brennmoor viaduct was built of local gritstone between 1884 and 1886. It has fourteen arches.",
    "A few miles up the valley, the smaller Cold Beck bridge crosses a side stream on nine arches.",
    "The engineer, Josiah Penrose, chose a gentle curve so the approach needed no deep cutting.",
]


@contextmanager
def forwarded(model: LoadedModel) -> Iterator[list[int]]:
    """Lengths of the input_ids of every draft forward inside the block."""
    lengths: list[int] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(int((args[0] if args else kwargs["input_ids"]).shape[1])),
        with_kwargs=True,
    )
    try:
        yield lengths
    finally:
        hook.remove()


def assert_same_scores(a: SpecPC, b: SpecPC, docs: list[str], question: str) -> None:
    first, second = a.score(docs, question), b.score(docs, question)
    for x, y in zip(first.scores, second.scores, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    assert a.select(first, keep_ratio=0.3).texts == b.select(second, keep_ratio=0.3).texts


@pytest.mark.parametrize("extra", [{}, {"lookahead": 3}, {"start_layer": 0, "draft_layers": 1}])
def test_a_follow_up_forwards_only_the_question_and_scores_as_fresh(llama: LoadedModel, extra: dict) -> None:  # type: ignore[type-arg]
    cached = SpecPC(llama, embedder=None, window=8, progress=False, **extra)
    fresh = SpecPC(llama, embedder=None, window=8, progress=False, prefix_cache_mb=0, **extra)
    with forwarded(llama) as lengths:
        first = cached.score(DOCS, "How many arches does the viaduct have?")
    full = lengths[0]
    with forwarded(llama) as lengths:
        cached.score(DOCS, "Who was the engineer of the viaduct?")
    assert lengths[0] < full // 3  # the documents came from the cache
    assert cached.prefix_cache.hits == 1 and cached.prefix_cache.reused_tokens > full // 2
    assert_same_scores(cached, fresh, DOCS, "Who was the engineer of the viaduct?")
    assert first.pieces == 1


def test_a_grown_history_reuses_what_came_before(llama: LoadedModel) -> None:
    cached = SpecPC(llama, embedder=None, window=8, progress=False)
    fresh = SpecPC(llama, embedder=None, window=8, progress=False, prefix_cache_mb=0)
    cached.score(DOCS[:2], "What did the engineer choose?")
    grown = [*DOCS, "The viaduct was listed as a protected structure in 1979."]
    with forwarded(llama) as lengths:
        cached.score(grown, "When was the viaduct listed?")
    with forwarded(llama) as full:
        fresh.score(grown, "When was the viaduct listed?")
    assert lengths[0] < full[0] * 0.8
    assert_same_scores(cached, fresh, grown, "When was the viaduct listed?")


def test_reuse_off_and_a_memory_bound(llama: LoadedModel) -> None:
    off = SpecPC(llama, embedder=None, window=8, progress=False, prefix_cache_mb=0)
    off.score(DOCS, "Arches?")
    with forwarded(llama) as lengths:
        off.score(DOCS, "Engineer?")
    assert len(off.prefix_cache) == 0 and off.prefix_cache.hits == 0 and lengths[0] > 50
    pc = SpecPC(llama, embedder=None, window=8, progress=False)
    pc.score(["Document number 0. " + DOCS[0]], "Question 0?")
    one_prompt = pc.prefix_cache.size
    assert one_prompt > 0
    bounded = PrefixCache(max_bytes=int(one_prompt * 2.5))
    small = SpecPC(llama, embedder=None, window=8, progress=False)
    small.prefix_cache = bounded
    for index in range(5):  # unrelated prompts: the oldest go first
        small.score([f"Document number {index}. " + DOCS[index % 3]], f"Question {index}?")
        assert bounded.size <= bounded.max_bytes
    assert 1 <= len(bounded) <= 2


def test_threads_sharing_one_specpc_score_as_alone(llama: LoadedModel) -> None:
    pc = SpecPC(llama, embedder=None, window=8, progress=False)
    fresh = SpecPC(llama, embedder=None, window=8, progress=False, prefix_cache_mb=0)
    questions = [f"Question {i} about the arches?" for i in range(6)]
    expected = {q: fresh.compress(DOCS, q, keep_ratio=0.3).texts for q in questions}
    got: dict[str, list[str]] = {}

    def work(question: str) -> None:
        got[question] = pc.compress(DOCS, question, keep_ratio=0.3).texts

    threads = [threading.Thread(target=work, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_common_prefix() -> None:
    a = np.array([1, 2, 3, 4])
    assert common_prefix(a, np.array([1, 2, 9])) == 2
    assert common_prefix(a, a) == 4 and common_prefix(a, np.array([], dtype=np.int64)) == 0
    assert common_prefix(a, np.array([1, 2, 3, 4, 5])) == 4


def test_a_follow_up_embeds_only_its_new_texts(llama: LoadedModel) -> None:
    import hashlib
    import re

    asked: list[list[str]] = []

    def bag_of_words(texts: list[str]) -> np.ndarray:  # a real (crude) embedder that logs its inputs
        asked.append(list(texts))
        vectors = np.zeros((len(texts), 64))
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    pc = SpecPC(llama, embedder=bag_of_words, window=8, progress=False)
    fresh = SpecPC(llama, embedder=bag_of_words, window=8, progress=False, prefix_cache_mb=0)
    pc.compress(DOCS, "How many arches?")
    asked.clear()
    follow = pc.compress(DOCS, "Who was the engineer?")
    sentences = sum(len(a) for a in asked)
    assert asked[0] == ["Who was the engineer?"]  # round 1: the sentences came from the memo
    assert sentences <= 3  # plus the bridge queries of round 2
    assert follow.texts == fresh.compress(DOCS, "Who was the engineer?").texts
