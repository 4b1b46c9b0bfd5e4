"""LangChain adapters on real LangChain objects and tiny random drafts.

The draft is random, so these tests check plumbing and invariants (verbatim text, budgets,
ids/metadata/tool-call pairing, errors), not which words a trained draft would keep.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import threading
from collections.abc import Sequence

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

import specrag.integrations.langchain as lc
from specrag import SpecPC
from specrag.langchain import (
    METADATA_KEY,
    SpecPCCompressor,
    SpecPCDocumentTransformer,
    SpecPCMessageTrimmer,
    trim_messages_with_specpc,
)

TEXTS = [
    "The capital of France is Paris. The river Seine flows through the city towards the sea.",
    "Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean.",
    "In 1969 two astronauts walked on the Moon while a third one waited in orbit above them.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green leaves.",
    "A recipe: mix flour, sugar, eggs and butter, then bake the cake for thirty minutes.",
]
QUERY = "What is the capital of France?"
TOOL_OUTPUT = " ".join(TEXTS * 3)


@pytest.fixture(scope="module")
def pc(draft) -> SpecPC:
    return SpecPC(draft, keep_ratio=0.5, window=8, pool_kernel=4, neighbourhood=2, progress=False)


@pytest.fixture
def documents() -> list[Document]:
    return [
        Document(
            page_content=text,
            metadata={"source": f"doc{index}.txt", "row": index},
            id=f"id-{index}",
        )
        for index, text in enumerate(TEXTS)
    ]


def tokens(pc: SpecPC, text: str) -> int:
    return len(pc.draft.tokenizer.encode(text, add_special_tokens=False)) if text else 0


def assert_verbatim(document: Document, original: str, separator: str = " … ") -> None:
    spans = document.metadata[METADATA_KEY]["spans"]
    assert separator.join(original[start:end] for start, end in spans) == document.page_content
    previous = 0
    for start, end in spans:
        assert previous <= start < end <= len(original)
        previous = end


def test_all_is_exported() -> None:
    for name in lc.__all__:
        assert hasattr(lc, name), name


# ---------------------------------------------------------------------------- compressor
def test_in_contextual_compression_retriever(pc: SpecPC, documents: list[Document]) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(documents)
    base = store.as_retriever(search_kwargs={"k": 4})
    retrieved = base.invoke(QUERY)
    compressor = SpecPCCompressor(compressor=pc, keep_ratio=0.3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)

    compressed = retriever.invoke(QUERY)

    by_id = {document.id: document for document in retrieved}
    assert compressed and {document.id for document in compressed} <= set(by_id)
    assert [d.id for d in compressed] == [d.id for d in retrieved if d.id in {c.id for c in compressed}]
    total = sum(tokens(pc, d.page_content) for d in retrieved)
    kept = 0
    for document in compressed:
        original = by_id[document.id]
        assert_verbatim(document, original.page_content)
        figures = document.metadata[METADATA_KEY]
        assert set(figures) == {"original_tokens", "kept_tokens", "relevance", "spans"}
        assert 0 < figures["kept_tokens"] <= figures["original_tokens"]
        assert {k: v for k, v in document.metadata.items() if k != METADATA_KEY} == original.metadata
        kept += figures["kept_tokens"]
    assert kept <= round(0.3 * total) + 1
    assert sum(len(d.page_content) for d in compressed) < sum(len(d.page_content) for d in retrieved)


def test_in_lcel_chain(pc: SpecPC, documents: list[Document]) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(documents)
    compressor = SpecPCCompressor(compressor=pc, keep_ratio=0.4)
    chain = (
        {"docs": store.as_retriever(search_kwargs={"k": 3}), "question": RunnablePassthrough()}
        | RunnableLambda(lambda x: compressor.compress_documents(x["docs"], x["question"]))
        | RunnableLambda(lambda docs: "\n\n".join(d.page_content for d in docs))
    )
    context = chain.invoke(QUERY)
    assert isinstance(context, str) and context
    assert asyncio.run(chain.ainvoke(QUERY)) == context  # greedy draft: deterministic


def test_ids_and_metadata_survive_and_caller_is_untouched(pc: SpecPC) -> None:
    odd = object()
    when = dt.datetime(2024, 5, 1, 12, 0)
    metadata = {
        "source": "a.txt",
        "page": 3,
        "score": 0.75,
        "when": when,
        "tags": ["x", "y"],
        "nested": {"a": [1, 2, {"b": None}]},
        "none": None,
        "blob": b"\x00\x01",
        "object": odd,
    }
    documents = [
        Document(page_content=TEXTS[0], metadata=metadata, id="keep-me"),
        Document(page_content=TEXTS[1], metadata={"source": "b.txt"}),
    ]
    snapshot = [
        (
            d.id,
            d.page_content,
            copy.deepcopy({k: v for k, v in d.metadata.items() if k != "object"}),
        )
        for d in documents
    ]

    out = SpecPCCompressor(compressor=pc, keep_ratio=1.0).compress_documents(documents, QUERY)

    for document, (doc_id, text, meta) in zip(documents, snapshot, strict=True):
        assert document.id == doc_id and document.page_content == text
        assert METADATA_KEY not in document.metadata
        assert {k: v for k, v in document.metadata.items() if k != "object"} == meta
    assert out[0] is not documents[0] and out[0].metadata is not documents[0].metadata
    assert out[0].id == "keep-me" and out[1].id is None
    for key, value in metadata.items():
        assert out[0].metadata[key] is value  # values survive as they were, not re-encoded
    assert out[0].page_content == TEXTS[0]  # keep_ratio=1.0 keeps everything


def test_drop_empty_and_sort_by_relevance(pc: SpecPC, documents: list[Document]) -> None:
    kept = SpecPCCompressor(compressor=pc, max_tokens=3).compress_documents(documents, QUERY)
    everything = SpecPCCompressor(compressor=pc, max_tokens=3, drop_empty=False).compress_documents(documents, QUERY)
    assert [d.id for d in everything] == [d.id for d in documents]
    dropped = [d for d in everything if d.metadata[METADATA_KEY]["kept_tokens"] == 0]
    assert dropped and all(d.page_content == "" for d in dropped)
    assert [d.id for d in kept] == [d.id for d in everything if d not in dropped]
    assert sum(d.metadata[METADATA_KEY]["kept_tokens"] for d in everything) <= 3

    ordered = SpecPCCompressor(compressor=pc, keep_ratio=0.5, sort_by_relevance=True).compress_documents(
        documents, QUERY
    )
    in_order = SpecPCCompressor(compressor=pc, keep_ratio=0.5).compress_documents(documents, QUERY)
    relevances = [d.metadata[METADATA_KEY]["relevance"] for d in ordered]
    assert relevances == sorted(relevances, reverse=True)
    assert sorted(d.id for d in ordered) == sorted(d.id for d in in_order)
    assert [d.id for d in in_order] == [d.id for d in documents if d.id in {x.id for x in in_order}]


class ThreadRecordingSpecPC(SpecPC):
    """Records which thread compressed, to show the async path leaves the loop free."""

    threads: list[int]

    def compress(self, *args, **kwargs):  # type: ignore[override]
        self.threads.append(threading.get_ident())
        return super().compress(*args, **kwargs)


def test_async_runs_off_the_event_loop(draft, documents: list[Document]) -> None:
    recording = ThreadRecordingSpecPC(draft, keep_ratio=0.5, window=8, progress=False)
    recording.threads = []
    compressor = SpecPCCompressor(compressor=recording)

    async def main() -> tuple[Sequence[Document], int]:
        result = await compressor.acompress_documents(documents, QUERY)
        return result, threading.get_ident()

    result, loop_thread = asyncio.run(main())
    assert recording.threads and loop_thread not in recording.threads
    sync = compressor.compress_documents(documents, QUERY)
    assert [(d.id, d.page_content, d.metadata) for d in result] == [(d.id, d.page_content, d.metadata) for d in sync]


def test_async_lazy_build(draft, documents: list[Document]) -> None:
    compressor = SpecPCCompressor(draft=draft, keep_ratio=0.5, settings={"window": 8})
    out = asyncio.run(compressor.acompress_documents(documents, QUERY))
    assert out and all(METADATA_KEY in d.metadata for d in out)
    assert compressor._specpc is not None and compressor._specpc.settings.window == 8


# ---------------------------------------------------------------------------- bad input
def test_bad_input(pc: SpecPC, documents: list[Document]) -> None:
    compressor = SpecPCCompressor(compressor=pc)
    for query in ("", "   \n"):
        with pytest.raises(ValueError, match="query must not be empty"):
            compressor.compress_documents(documents, query)
        with pytest.raises(ValueError, match="query must not be empty"):
            asyncio.run(compressor.acompress_documents(documents, query))
    with pytest.raises(TypeError, match="query must be a str"):
        compressor.compress_documents(documents, None)  # type: ignore[arg-type]
    assert compressor.compress_documents([], QUERY) == []
    assert asyncio.run(compressor.acompress_documents([], QUERY)) == []
    not_text = Document.model_construct(page_content=b"raw bytes", metadata={})
    with pytest.raises(TypeError, match=r"documents\[1\]\.page_content must be a str"):
        compressor.compress_documents([documents[0], not_text], QUERY)
    with pytest.raises(TypeError, match="must be a langchain Document"):
        compressor.compress_documents(["plain string"], QUERY)  # type: ignore[list-item]


def test_construction_is_lazy_and_validated(draft, pc: SpecPC) -> None:
    lazy = SpecPCCompressor(draft="no-such-draft-model-anywhere")  # nothing loaded yet
    assert lazy.compress_documents([], QUERY) == []
    with pytest.raises(ValueError, match="not both"):
        SpecPCCompressor(draft=draft, keep_ratio=0.5, max_tokens=10)
    with pytest.raises(ValueError, match="keep_ratio"):
        SpecPCCompressor(draft=draft, keep_ratio=1.5)
    with pytest.raises(ValueError, match="invalid SpecPC settings(.|\n)*windo"):
        SpecPCCompressor(draft=draft, settings={"windo": 8})
    with pytest.raises(ValueError, match="invalid SpecPC settings"):
        SpecPCCompressor(draft=draft, settings={"window": 0})
    with pytest.raises(ValueError, match="compressor is ready-made"):
        SpecPCCompressor(compressor=pc, settings={"window": 8})
    with pytest.raises(ValueError, match="keep_ration"):
        SpecPCCompressor(draft=draft, keep_ration=0.5)  # type: ignore[call-arg]
    assert "tiny-llama" in repr(SpecPCCompressor(draft=draft))


def test_huge_document_goes_through_in_pieces(draft) -> None:
    text = " ".join(TEXTS * 50)
    text = (text * (20_000 // len(text) + 1))[:20_000]
    compressor = SpecPCCompressor(draft=draft, keep_ratio=0.1, settings={"max_draft_tokens": 512})
    (out,) = compressor.compress_documents([Document(page_content=text, id="big")], QUERY)
    figures = out.metadata[METADATA_KEY]
    assert figures["original_tokens"] > 4 * 512  # could only be scored in several passes
    assert 0 < figures["kept_tokens"] <= round(0.1 * figures["original_tokens"])
    assert out.id == "big"
    assert_verbatim(out, text)


# ---------------------------------------------------------------------------- transformer
def test_transformer_query_sources(pc: SpecPC, documents: list[Document]) -> None:
    transformer = SpecPCDocumentTransformer(compressor=pc, keep_ratio=0.5)
    direct = SpecPCCompressor(compressor=pc, keep_ratio=0.5).compress_documents(documents, QUERY)

    by_kwarg = transformer.transform_documents(documents, query=QUERY)
    assert [(d.id, d.page_content) for d in by_kwarg] == [(d.id, d.page_content) for d in direct]

    tagged = [d.model_copy(update={"metadata": {**d.metadata, "question": QUERY}}) for d in documents]
    by_metadata = SpecPCDocumentTransformer(compressor=pc, keep_ratio=0.5, query_key="question").transform_documents(
        tagged
    )
    assert [(d.id, d.page_content) for d in by_metadata] == [(d.id, d.page_content) for d in direct]
    assert all(d.metadata["question"] == QUERY for d in by_metadata)

    by_async = asyncio.run(transformer.atransform_documents(documents, query=QUERY))
    assert [d.page_content for d in by_async] == [d.page_content for d in direct]

    with pytest.raises(ValueError) as info:
        transformer.transform_documents(documents)
    message = str(info.value)
    assert "needs a query" in message and "query=" in message and "metadata['query']" in message
    with pytest.raises(ValueError, match="needs a query"):
        asyncio.run(transformer.atransform_documents(documents))

    mixed = [tagged[0], tagged[1].model_copy(update={"metadata": {"question": "Other?"}})]
    with pytest.raises(ValueError, match="different"):
        SpecPCDocumentTransformer(compressor=pc, query_key="question").transform_documents(mixed)
    with pytest.raises(TypeError, match="unexpected keyword"):
        transformer.transform_documents(documents, question=QUERY)
    assert transformer.transform_documents([]) == []


class QueryTagger(BaseDocumentCompressor):
    """A user-side pipeline step that records the query in metadata for later transformers."""

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return [d.model_copy(update={"metadata": {**d.metadata, "query": query}}) for d in documents]


def test_transformer_in_document_compressor_pipeline(pc: SpecPC, documents: list[Document]) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(documents)
    base = store.as_retriever(search_kwargs={"k": 3})
    transformer = SpecPCDocumentTransformer(compressor=pc, keep_ratio=0.5)

    bare = ContextualCompressionRetriever(
        base_compressor=DocumentCompressorPipeline(transformers=[transformer]), base_retriever=base
    )
    with pytest.raises(ValueError, match="needs a query"):
        bare.invoke(QUERY)

    tagged = ContextualCompressionRetriever(
        base_compressor=DocumentCompressorPipeline(transformers=[QueryTagger(), transformer]),
        base_retriever=base,
    )
    out = tagged.invoke(QUERY)
    assert out and all(METADATA_KEY in d.metadata for d in out)
    assert asyncio.run(tagged.ainvoke(QUERY)) == out


# ---------------------------------------------------------------------------- message trimming
def conversation() -> list[BaseMessage]:
    return [
        SystemMessage("You are a helpful geography agent.", id="sys"),
        HumanMessage("Tell me about Europe.", id="h1"),
        AIMessage(
            "Let me search for that.",
            id="a1",
            tool_calls=[{"name": "search", "args": {"q": "Europe"}, "id": "call_1", "type": "tool_call"}],
        ),
        ToolMessage(TOOL_OUTPUT, tool_call_id="call_1", name="search", id="t1"),
        AIMessage(TOOL_OUTPUT, id="a2", name="agent"),
        HumanMessage(
            [
                {"type": "text", "text": TOOL_OUTPUT},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
            id="h2",
        ),
        AIMessage("ok", id="a3"),
        HumanMessage(QUERY, id="h3"),
        AIMessage(
            "",
            id="a4",
            tool_calls=[{"name": "lookup", "args": {"city": "Paris"}, "id": "call_2", "type": "tool_call"}],
        ),
        ToolMessage("Paris: capital of France, population 2.1 million.", tool_call_id="call_2", id="t2"),
    ]


def text_tokens(pc: SpecPC, message: BaseMessage) -> int:
    return sum(tokens(pc, text) for _, text in lc._text_pieces(message.content))


def assert_structure_kept(before: list[BaseMessage], after: list[BaseMessage]) -> None:
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        assert type(new) is type(old)
        assert (new.id, new.name) == (old.id, old.name)
        if isinstance(old, ToolMessage):
            assert new.tool_call_id == old.tool_call_id
        if isinstance(old, AIMessage):
            assert new.tool_calls == old.tool_calls


def test_trim_keeps_structure_and_budget(pc: SpecPC) -> None:
    before = conversation()
    snapshot = copy.deepcopy(before)
    last_turn = 7
    verbatim = sum(text_tokens(pc, m) for i, m in enumerate(before) if i >= last_turn or i == 0)
    short_older = sum(text_tokens(pc, before[i]) for i in (1, 2, 6))  # <= 32 tokens each
    assert all(text_tokens(pc, before[i]) <= 32 for i in (1, 2, 6))
    max_tokens = verbatim + short_older + 40

    after = trim_messages_with_specpc(before, compressor=pc, max_tokens=max_tokens)

    assert before == snapshot  # caller's messages untouched
    assert_structure_kept(before, after)
    for index in (0, 1, 2, 6, 7, 8, 9):  # system, short older ones, last turn: verbatim
        assert after[index] is before[index]
    shrunk = [after[i] for i in (3, 4, 5)]
    assert sum(text_tokens(pc, m) for m in shrunk) <= max_tokens - verbatim - short_older
    assert sum(text_tokens(pc, m) for m in after) <= max_tokens
    left = [text for m in shrunk for _, text in lc._text_pieces(m.content)]
    assert any(text and text != lc.TRIMMED_PLACEHOLDER for text in left)  # shrunk, not emptied
    for message in shrunk:  # whatever text is left is made of verbatim pieces
        for _, text in lc._text_pieces(message.content):
            if text != lc.TRIMMED_PLACEHOLDER:
                assert all(piece in TOOL_OUTPUT for piece in text.split(" … "))
    image_blocks = [b for b in after[5].content if isinstance(b, dict) and b.get("type") == "image_url"]
    assert image_blocks == [before[5].content[1]]  # non-text block kept


def test_trim_to_nothing_keeps_every_message(pc: SpecPC) -> None:
    before = conversation()
    after = trim_messages_with_specpc(before, compressor=pc, max_tokens=0, short_message_tokens=0)
    assert_structure_kept(before, after)
    assert after[3].content in ("", lc.TRIMMED_PLACEHOLDER)  # the ToolMessage is still there
    assert after[2].content == "" and after[2].tool_calls == before[2].tool_calls
    older = sum(text_tokens(pc, m) for m in after[1:7])
    assert older == 0  # budget 0: not even placeholders fit
    assert after[5].content == [before[5].content[1]]  # only the image block is left
    for index in (0, 7, 8, 9):
        assert after[index] is before[index]


def test_trim_placeholder_when_it_fits(pc: SpecPC) -> None:
    before = [
        HumanMessage("first question", id="h1"),
        AIMessage("", id="a1", tool_calls=[{"name": "s", "args": {}, "id": "c1", "type": "tool_call"}]),
        ToolMessage(TOOL_OUTPUT, tool_call_id="c1", id="t1"),
        HumanMessage(QUERY, id="h2"),
    ]
    verbatim = text_tokens(pc, before[0]) + text_tokens(pc, before[3])
    room = tokens(pc, "[gone]")
    after = trim_messages_with_specpc(before, compressor=pc, max_tokens=verbatim + room, placeholder="[gone]")
    assert_structure_kept(before, after)
    assert text_tokens(pc, after[2]) <= room
    assert after[2].content  # a placeholder, or a few verbatim words: never gone


def test_trim_without_older_part(pc: SpecPC) -> None:
    short = [SystemMessage("be brief"), HumanMessage(QUERY)]
    assert trim_messages_with_specpc(short, compressor=pc, max_tokens=0) == short
    last_turn_only = conversation()[7:]
    out = trim_messages_with_specpc(last_turn_only, compressor=pc, max_tokens=1)
    assert all(a is b for a, b in zip(out, last_turn_only, strict=True))
    assert trim_messages_with_specpc([], compressor=pc, max_tokens=10) == []
    fits = conversation()
    assert all(
        a is b for a, b in zip(trim_messages_with_specpc(fits, compressor=pc, max_tokens=10**6), fits, strict=True)
    )


def test_trim_errors(pc: SpecPC) -> None:
    with pytest.raises(ValueError, match="needs a HumanMessage"):
        trim_messages_with_specpc([SystemMessage("x"), AIMessage("y")], compressor=pc, max_tokens=5)
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        trim_messages_with_specpc(conversation(), compressor=pc, max_tokens=-1)
    image_only = [HumanMessage([{"type": "image_url", "image_url": {"url": "data:,"}}])]
    with pytest.raises(ValueError, match="pass query"):
        trim_messages_with_specpc(image_only, compressor=pc, max_tokens=5)
    with pytest.raises(TypeError, match="BaseMessage"):
        trim_messages_with_specpc(["hello"], compressor=pc, max_tokens=5)  # type: ignore[list-item]


def test_message_trimmer_runnable(pc: SpecPC) -> None:
    history = conversation()[1:7]
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a helpful geography agent."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    trimmer = SpecPCMessageTrimmer(compressor=pc, max_tokens=120)
    model = GenericFakeChatModel(messages=iter([AIMessage("Paris."), AIMessage("Paris.")]))
    chain = prompt | trimmer
    messages = chain.invoke({"history": history, "question": QUERY})
    expected = trim_messages_with_specpc(
        prompt.invoke({"history": history, "question": QUERY}).to_messages(),
        compressor=pc,
        max_tokens=120,
    )
    assert [(type(m), m.content) for m in messages] == [(type(m), m.content) for m in expected]
    assert sum(text_tokens(pc, m) for m in messages) <= 120
    assert [m.content for m in asyncio.run(chain.ainvoke({"history": history, "question": QUERY}))] == [
        m.content for m in messages
    ]
    assert (prompt | trimmer | model).invoke({"history": history, "question": QUERY}).content == "Paris."
    assert trimmer.invoke(conversation()) == trim_messages_with_specpc(conversation(), compressor=pc, max_tokens=120)
