"""Rank fusion, sentence snapping, and SpecPC with an embedder (tiny random draft)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pytest

from specrag import SpecPC, build_tiny_model
from specrag.core.sentences import sentence_index, sentence_spans
from specrag.core.specpc.ranking import fuse_ranks, max_ranks, percentile_ranks, snap_to_sentences


def hashed_bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A real (if crude) sentence embedder: hashed word counts, unit length. Sentences that
    share words with the question get a higher cosine, which is all these tests need."""
    vectors = np.zeros((len(texts), 256))
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-9)


DOCS = [
    (
        "The weather was mild all week. Farmers planted barley in the north. "
        "Zorblat the engineer designed the copper bridge over the river. Markets opened early."
    ),
    "A choir sang in the hall. Tickets sold out quickly. The mayor gave a speech.",
]
QUESTION = "Who designed the copper bridge over the river?"


def test_sentence_spans_cover_latin_cjk_and_unpunctuated_text() -> None:
    assert sentence_spans("One. Two!  Three?") == [(0, 4), (4, 9), (9, 17)]
    assert [s for s in sentence_spans("東京です。大阪です。")] == [(0, 5), (5, 10)]
    assert sentence_spans("no full stop here") == [(0, 17)]
    assert sentence_spans("") == []
    assert sentence_index("One. Two.", np.array([0, 5, 8])).tolist() == [0, 1, 1]


def test_percentile_ranks_are_monotone_and_share_ties() -> None:
    ranks = percentile_ranks(np.array([3.0, 1.0, 2.0, 2.0]))
    assert ranks[1] == 0.0 and ranks[0] == 1.0
    assert ranks[2] == ranks[3] == pytest.approx(0.5)
    assert percentile_ranks(np.array([7.0])).tolist() == [1.0]


def test_fuse_ranks_weighting() -> None:
    first = [np.array([1.0, 2.0, 3.0]), np.array([0.5])]
    second = [np.array([3.0, 2.0, 1.0]), np.array([9.0])]
    alone = fuse_ranks([first, second], [1.0, 0.0])
    assert np.argsort(np.concatenate(alone)).tolist() == np.argsort(np.concatenate(first)).tolist()
    swapped = fuse_ranks([first, second], [0.0, 1.0])
    assert np.argmax(np.concatenate(swapped)) == 3  # the second signal's best unit wins
    with pytest.raises(ValueError, match="one weight per signal"):
        fuse_ranks([first], [1.0, 1.0])
    with pytest.raises(ValueError, match="one score per unit"):
        fuse_ranks([first, [np.array([1.0]), np.array([1.0])]], [1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        fuse_ranks([first, second], [1.0, -1.0])


def test_snap_gives_each_sentence_its_best_score() -> None:
    text = "Aa bb. Cc dd."
    snapped = snap_to_sentences(text, np.array([0, 3, 7, 10]), np.array([0.1, 0.9, 0.2, 0.3]))
    assert snapped.tolist() == [0.9, 0.9, 0.3, 0.3]


def test_strong_relevance_keeps_the_matching_sentence_whole(draft) -> None:  # type: ignore[no-untyped-def]
    pc = SpecPC(
        draft,
        keep_ratio=0.3,
        embedder=hashed_bag_of_words,
        fusion="sum",
        relevance_weight=50.0,
        snap="sentence",
        window=8,
        pool_kernel=4,
        neighbourhood=2,
    )
    result = pc.compress(DOCS, QUESTION)
    kept = " ".join(doc.text for doc in result.documents)
    assert "Zorblat the engineer designed the copper bridge over the river." in kept
    assert result.kept_tokens <= result.budget


def test_select_after_score_equals_compress_with_an_embedder(draft) -> None:  # type: ignore[no-untyped-def]
    pc = SpecPC(draft, embedder=hashed_bag_of_words, snap="sentence", window=8)
    scored = pc.score(DOCS, QUESTION)
    assert scored.relevance is not None and len(scored.relevance) == len(DOCS)
    for ratio in (0.1, 0.3, 0.7):
        assert pc.select(scored, keep_ratio=ratio).texts == pc.compress(DOCS, QUESTION, keep_ratio=ratio).texts


def test_blank_documents_pass_through_with_an_embedder(draft) -> None:  # type: ignore[no-untyped-def]
    pc = SpecPC(draft, keep_ratio=0.5, embedder=hashed_bag_of_words, window=8)
    result = pc.compress(["", "   ", DOCS[0]], QUESTION)
    assert [doc.text for doc in result.documents[:2]] == ["", "   "]
    assert result.documents[2].text


def test_embedder_errors_are_named(draft) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="embedder must be 'minilm'"):
        SpecPC(draft, embedder="bert")
    with pytest.raises(TypeError, match="embedder must be"):
        SpecPC(draft, embedder=5)
    with pytest.raises(ValueError, match="relevance_weight"):
        SpecPC(draft, relevance_weight=-1.0)
    broken = SpecPC(draft, embedder=lambda texts: np.ones((1, 4)), window=8)
    with pytest.raises(ValueError, match="embedder returned 1 vectors"):
        broken.compress(DOCS, QUESTION)


CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_frame_puts_documents_in_the_user_turn() -> None:
    draft = build_tiny_model("qwen2")
    with pytest.raises(ValueError, match="has no chat template"):
        SpecPC(draft, chat=True)
    # Tiny models share one cached tokenizer: template a copy, never the shared one.
    draft = dataclasses.replace(draft, tokenizer=copy.deepcopy(draft.tokenizer))
    draft.tokenizer.chat_template = CHATML
    assert build_tiny_model("qwen2").tokenizer.chat_template is None
    pc = SpecPC(draft, keep_ratio=0.3, chat=True, lookahead=4, window=8, progress=False)
    head, tail = pc._frame(QUESTION, None)
    assert head.startswith("<|system|>Answer the question") and head.endswith("<|user|>Documents:\n\n")
    assert tail == f"\n\nQuestion: {QUESTION}\nAnswer:\n<|assistant|>"
    assert pc._frame(QUESTION, "Be brief.")[0].startswith("<|system|>Be brief.\n")
    result = pc.compress(DOCS, QUESTION)
    assert 0 < result.kept_tokens <= result.budget
    for doc in result.documents:
        assert doc.text == " … ".join(doc.original[a:b] for a, b in doc.spans)
    # Inputs longer than one pass are still split into pieces that each end with the question.
    small = SpecPC(draft, keep_ratio=0.3, chat=True, max_draft_tokens=220, window=8, progress=False)
    assert small.compress(DOCS * 3, QUESTION).pieces > 1


def test_max_ranks_keep_each_signals_top_on_top() -> None:
    attention = [np.array([0.9, 0.1, 0.2]), np.array([0.3])]
    relevance = [np.array([0.0, 0.1, 0.9]), np.array([0.2])]
    fused = max_ranks([attention, relevance])
    # Position 0 is attention's best, position 2 relevance's best: both get the top rank,
    # where a weighted sum would rank them by how much the two signals agree.
    assert fused[0][0] == fused[0][2] == 1.0
    assert fused[0][1] < 1.0 and fused[1].shape == (1,)


def test_max_fusion_keeps_the_relevant_sentence_whatever_the_attention(draft) -> None:  # type: ignore[no-untyped-def]
    # Each signal's top sentence ranks first under max fusion; a budget that fits two
    # sentences keeps relevance's top whatever the random draft attends to most.
    pc = SpecPC(draft, keep_ratio=0.5, embedder=hashed_bag_of_words, fusion="max", snap="sentence", window=8)
    kept = " ".join(doc.text for doc in pc.compress(DOCS, QUESTION).documents)
    assert "Zorblat the engineer designed the copper bridge over the river." in kept
    scored = pc.score(DOCS, QUESTION)
    assert pc.select(scored, keep_ratio=0.3).texts == pc.compress(DOCS, QUESTION, keep_ratio=0.3).texts
    with pytest.raises(ValueError, match="relevance_weight has no effect with fusion='max'"):
        SpecPC(draft, embedder=hashed_bag_of_words, fusion="max", relevance_weight=2.0)
    with pytest.raises(ValueError, match="fusion"):
        SpecPC(draft, fusion="mean")


BRIDGE_DOCS = [
    "Mara Voss is a botanist. She grows rare tomatoes. She works for Halcyon Optics.",
    "Ironvale Press was set up by two apprentices. The company is based in Port Anselm.",
    "Halcyon Optics was set up by two apprentices. The company is based in Old Velia.",
]
BRIDGE_QUESTION = "In which city is the company that Mara Voss works for based?"


def test_the_bridge_round_adds_the_round_one_best_sentences_to_the_query(draft) -> None:  # type: ignore[no-untyped-def]
    seen: list[list[str]] = []

    def recording(texts):  # type: ignore[no-untyped-def]
        seen.append(list(texts))
        return hashed_bag_of_words(texts)

    pc = SpecPC(draft, keep_ratio=0.4, embedder=recording, fusion="max", bridge=True, snap="sentence", window=8)
    scored = pc.score(BRIDGE_DOCS, BRIDGE_QUESTION)
    # One draft pass, two embedder calls: the question with every sentence, then only the
    # bridge queries (one when the fused and the relevance-only best sentences agree, else two).
    assert scored.bridge is not None
    bridges = scored.bridge.split("\n")
    assert len(seen) == 2 and seen[0][0] == BRIDGE_QUESTION and len(seen[0]) == 1 + 7  # seven sentences
    assert seen[1] == [f"{bridge} {BRIDGE_QUESTION}" for bridge in bridges]
    assert 1 <= len(bridges) <= 2 and len(set(bridges)) == len(bridges)
    for bridge in bridges:  # verbatim sentences of one document each
        assert any(bridge in doc for doc in BRIDGE_DOCS)
    relevance_best = max(
        (sentence.strip() + "." for doc in BRIDGE_DOCS for sentence in doc.split(".") if sentence.strip()),
        key=lambda sentence: float(hashed_bag_of_words([sentence, BRIDGE_QUESTION]).prod(axis=0).sum()),
    )
    assert any(bridge.startswith(relevance_best) for bridge in bridges)  # the relevance-only pick
    assert scored.bridge_relevance is not None and len(scored.bridge_relevance) == 3
    assert pc.select(scored, keep_ratio=0.4).texts == pc.compress(BRIDGE_DOCS, BRIDGE_QUESTION).texts
    with pytest.raises(ValueError, match="bridge=True .* give an embedder"):
        SpecPC(draft, bridge=True, embedder=None)


def test_the_bridge_relevance_finds_the_fact_that_names_the_bridge_entity() -> None:
    from specrag.core.embeddings import sentence_relevance
    from specrag.core.specpc.ranking import max_ranks

    starts = [np.array([0, 26, 47]), np.array([0, 46]), np.array([0, 46])]  # sentence starts
    plain = sentence_relevance(hashed_bag_of_words, BRIDGE_QUESTION, BRIDGE_DOCS, starts)
    bridged = sentence_relevance(
        hashed_bag_of_words, f"She works for Halcyon Optics. {BRIDGE_QUESTION}", BRIDGE_DOCS, starts
    )
    # The Halcyon document outranks the Ironvale confuser only once the bridge is in the query.
    assert bridged[2].max() > bridged[1].max()
    fused = max_ranks([plain, bridged])
    assert fused[2].max() >= fused[1].max()
