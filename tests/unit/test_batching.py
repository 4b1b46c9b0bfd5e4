"""Batched compression: compress_batch equals compress request by request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from specrag import CompressRequest, LoadedModel, SpecPC
from specrag.core.specpc.batching import micro_batches

REQUESTS = [
    CompressRequest(
        documents=[
            "Zorblat the engineer designed the copper bridge over the river in 1884.",
            "Markets opened early. Farmers planted barley in the north.",
        ],
        question="Who designed the copper bridge?",
    ),
    CompressRequest(documents=["Ada wrote the parser.", "", "Bob wrote the tests; Cy ran them."], question="Tests?"),
    CompressRequest(
        documents=["北京是中国的首都，长江是中国最长的河流。 Emoji: 🚀 launch, 👍🏽 thumbs up. " * 3],
        question="What is the capital of China, and which river is the longest one of all?",
        instruction="Answer briefly.",
    ),
    CompressRequest(documents=["The viaduct crosses the valley on fourteen arches. " * 12], question="Arches?"),
]


def same_results(pc: SpecPC, requests: list[CompressRequest], **batch: int) -> None:
    batched = pc.compress_batch(requests, **batch)
    assert len(batched) == len(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = pc.compress(request.documents, request.question, request.instruction)
        assert result.texts == alone.texts
        assert (result.budget, result.kept_tokens, result.pieces) == (alone.budget, alone.kept_tokens, alone.pieces)
        np.testing.assert_allclose(
            [d.relevance for d in result.documents], [d.relevance for d in alone.documents], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(("batch_size", "forwards"), [(1, 4), (2, 2), (8, 1)])
def test_batched_results_equal_one_by_one(llama: LoadedModel, batch_size: int, forwards: int) -> None:
    pc = SpecPC(llama, keep_ratio=0.4, embedder=None, window=8, progress=False)
    calls: list[int] = []
    hook = llama.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        pc.compress_batch(REQUESTS, batch_size=batch_size)
    finally:
        hook.remove()
    assert len(calls) == forwards  # four one-pass requests, batch_size per draft forward
    same_results(pc, REQUESTS, batch_size=batch_size)


def test_batched_equals_one_by_one_with_sentence_units_pieces_and_a_token_cap(qwen2: LoadedModel) -> None:
    # qwen2: grouped-query attention; max_draft_tokens forces a request into several passes
    pc = SpecPC(qwen2, keep_ratio=0.3, embedder=None, snap="sentence", window=16, max_draft_tokens=160, progress=False)
    assert pc.compress(REQUESTS[3].documents * 3, "Arches?").pieces > 1
    requests = [*REQUESTS, CompressRequest(documents=REQUESTS[3].documents * 3, question="Arches?")]
    same_results(pc, requests, batch_size=4, max_batch_tokens=400)


def test_lookahead_batches_run_one_by_one_and_still_agree(llama: LoadedModel) -> None:
    pc = SpecPC(llama, keep_ratio=0.4, embedder=None, window=8, lookahead=3, progress=False)
    same_results(pc, REQUESTS[:2], batch_size=4)


def test_dicts_async_and_empty_batches(llama: LoadedModel) -> None:
    pc = SpecPC(llama, keep_ratio=0.4, embedder=None, window=8, progress=False)
    as_dicts = [request.model_dump() for request in REQUESTS[:2]]
    assert [r.texts for r in pc.compress_batch(as_dicts)] == [r.texts for r in pc.compress_batch(REQUESTS[:2])]
    assert [r.texts for r in asyncio.run(pc.acompress_batch(REQUESTS[:2], keep_ratio=0.2))] == [
        r.texts for r in pc.compress_batch(REQUESTS[:2], keep_ratio=0.2)
    ]
    assert pc.compress_batch([]) == []
    zero = pc.compress_batch(REQUESTS[:2], max_tokens=0)
    assert all(r.kept_tokens == 0 and r.pieces == 0 for r in zero)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([REQUESTS[0], {"documents": ["x"]}], "request 1: question"),
        ([REQUESTS[0], ("docs", "q")], "request 1: expected a CompressRequest"),
        ([{"documents": "one string", "question": "q"}], "request 0: documents"),
        ([REQUESTS[0], {"documents": ["x"], "question": "  "}], "request 1: question"),
    ],
)
def test_a_bad_request_is_named_before_any_draft_pass(llama: LoadedModel, requests: list, message: str) -> None:
    pc = SpecPC(llama, embedder=None, window=8, progress=False)
    calls: list[int] = []
    hook = llama.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises((TypeError, ValueError), match=message) as caught:
            pc.compress_batch(requests)
    finally:
        hook.remove()
    assert calls == [] and "\n" not in str(caught.value)


@hypothesis_settings(max_examples=200)
@given(st.lists(st.integers(1, 500), max_size=40), st.integers(1, 9), st.integers(1, 2000))
def test_micro_batches_cover_every_prompt_once_within_bounds(lengths: list[int], size: int, tokens: int) -> None:
    groups = list(micro_batches(lengths, size, tokens))
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= size
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= tokens
    with pytest.raises(ValueError, match="batch_size"):
        next(micro_batches([3], 0, 10))


def test_the_framework_batch_paths_equal_their_single_calls(llama: LoadedModel) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from specrag.langchain import SpecPCCompressor
    from specrag.llama_index import SpecPCPostprocessor

    pc = SpecPC(llama, keep_ratio=0.4, embedder=None, window=8, progress=False)
    pairs = [(request.documents, request.question) for request in REQUESTS[:3]]
    compressor = SpecPCCompressor(compressor=pc, instruction="Answer briefly.")
    batches = [[Document(page_content=text) for text in docs if text] for docs, _ in pairs] + [[]]
    queries = [question for _, question in pairs] + ["Anything?"]
    batched = compressor.compress_documents_batch(batches, queries)
    assert batched[-1] == []
    for documents, query, kept_docs in zip(batches[:-1], queries, batched, strict=False):
        assert [d.page_content for d in kept_docs] == [
            d.page_content for d in compressor.compress_documents(documents, query)
        ]
    assert asyncio.run(compressor.acompress_documents_batch(batches, queries)) == batched
    with pytest.raises(ValueError, match="one query per list"):
        compressor.compress_documents_batch(batches, queries[:1])

    post = SpecPCPostprocessor(compressor=pc)
    node_batches = [[NodeWithScore(node=TextNode(text=text), score=1.0) for text in docs if text] for docs, _ in pairs]
    nodes_out = post.postprocess_nodes_batch(node_batches, queries[:3])
    for nodes, query, kept_nodes in zip(node_batches, queries, nodes_out, strict=False):
        single = post.postprocess_nodes(nodes, query_str=query)
        assert [n.node.get_content() for n in kept_nodes] == [n.node.get_content() for n in single]
    again = asyncio.run(post.apostprocess_nodes_batch(node_batches, queries[:3]))
    assert [[n.node.get_content() for n in r] for r in again] == [[n.node.get_content() for n in r] for r in nodes_out]
