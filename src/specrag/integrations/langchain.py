"""LangChain adapters over :class:`specrag.SpecPC`: compressor, transformer, message trimming.

Why these shapes
----------------
- :class:`SpecPCCompressor` is a ``BaseDocumentCompressor``, the one interface that
  ``ContextualCompressionRetriever`` and ``DocumentCompressorPipeline`` call with the query;
  it is also a plain object whose ``compress_documents`` fits in a ``RunnableLambda`` for LCEL.
- :class:`SpecPCDocumentTransformer` exists because ``DocumentCompressorPipeline`` calls
  transformers *without* the query; SpecPC cannot score without one, so the transformer
  takes it as a keyword or from the documents' metadata, and says so loudly otherwise.
- :func:`trim_messages_with_specpc` / :class:`SpecPCMessageTrimmer` shrink an agent's older
  history (long tool outputs above all) against its latest question, leaving everything a
  chat API validates (message types, ids, tool-call pairing) intact.

Data flows one way: ``Document``/``BaseMessage`` -> plain strings -> SpecPC ->
:class:`~specrag.CompressionResult` -> *new* framework objects. Nothing here touches tensors,
and the caller's documents and messages are never mutated.

Compression figures are written to one metadata key, :data:`METADATA_KEY` (``"specrag"``)::

    {"original_tokens": int, "kept_tokens": int, "relevance": float,
     "spans": [(start, end), ...]}   # character spans kept, in the original page_content
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
        Callbacks,
    )
    from langchain_core.documents import (
        BaseDocumentCompressor,
        BaseDocumentTransformer,
        Document,
    )
    from langchain_core.language_models import BaseChatModel
    from langchain_core.language_models.base import LangSmithParams
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        UsageMetadata,
    )
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.prompt_values import PromptValue
    from langchain_core.runnables import RunnableConfig, RunnableSerializable
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "specrag.langchain needs langchain-core; install it with: pip install 'specrag[langchain]'"
    ) from error

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from ..core.models import LoadedModel
from ..core.speckv import SpecKVResult
from ..core.specpc import CompressedDocument, CompressionResult, CompressRequest, SpecPC
from ..core.trimming import split_history, trim_pieces
from .sources import SpecKVSource, SpecPCSource

__all__ = [
    "METADATA_KEY",
    "TRIMMED_PLACEHOLDER",
    "ChatSpecKV",
    "SpecPCCompressor",
    "SpecPCDocumentTransformer",
    "SpecPCMessageTrimmer",
    "trim_messages_with_specpc",
]

METADATA_KEY = "specrag"
"""Metadata key under which compression figures are stored on returned documents."""

TRIMMED_PLACEHOLDER = "[trimmed]"
"""Default content of an older message whose text was trimmed away entirely."""


class _DocumentCompression(SpecPCSource):
    """Fields and logic shared by the compressor and the transformer."""

    keep_ratio: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of tokens kept across all documents (the draft's, or target_tokenizer's).",
    )
    max_tokens: int | None = Field(
        None, ge=0, description="Tokens kept across all documents, instead of keep_ratio (draft's or target's)."
    )
    instruction: str | None = Field(
        None, description="Task instruction the draft reads before the documents (never cut)."
    )
    drop_empty: bool = Field(True, description="Leave out documents of which nothing was kept.")
    sort_by_relevance: bool = Field(
        False, description="Order output by the draft's relevance (highest first), not input order."
    )

    @model_validator(mode="after")
    def _one_budget(self) -> _DocumentCompression:
        if self.keep_ratio is not None and self.max_tokens is not None:
            raise ValueError("give keep_ratio or max_tokens, not both")
        return self

    def _compress(self, documents: list[Document], query: str) -> list[Document]:
        result = self.get_specpc().compress(
            [document.page_content for document in documents],
            query,
            self.instruction,
            keep_ratio=self.keep_ratio,
            max_tokens=self.max_tokens,
        )
        return self._wrap(documents, result)

    async def _acompress(self, documents: list[Document], query: str) -> list[Document]:
        specpc = await self.aget_specpc()
        result = await specpc.acompress(
            [document.page_content for document in documents],
            query,
            self.instruction,
            keep_ratio=self.keep_ratio,
            max_tokens=self.max_tokens,
        )
        return self._wrap(documents, result)

    def _wrap(self, documents: list[Document], result: CompressionResult) -> list[Document]:
        """New documents with compressed text and figures; ids and metadata carried over."""
        pairs = [
            (document, compressed)
            for document, compressed in zip(documents, result.documents, strict=True)
            if not (self.drop_empty and compressed.is_dropped)
        ]
        if self.sort_by_relevance:  # stable: ties keep input order
            pairs.sort(key=lambda pair: -pair[1].relevance)
        return [
            document.model_copy(
                update={
                    "page_content": compressed.text,
                    "metadata": {**document.metadata, METADATA_KEY: _figures(compressed)},
                }
            )
            for document, compressed in pairs
        ]


def _figures(compressed: CompressedDocument) -> dict[str, Any]:
    return {
        "original_tokens": compressed.original_tokens,
        "kept_tokens": compressed.kept_tokens,
        "relevance": compressed.relevance,
        "spans": list(compressed.spans),
    }


def _check_query(query: object, name: str = "query") -> str:
    if not isinstance(query, str):
        raise TypeError(f"{name} must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{name} must not be empty: SpecPC scores documents against it")
    return query


def _check_documents(documents: object) -> list[Document]:
    if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a sequence of Document, got {type(documents).__name__}")
    for position, document in enumerate(documents):
        if not isinstance(document, Document):
            raise TypeError(f"documents[{position}] must be a langchain Document, got {type(document).__name__}")
        if not isinstance(document.page_content, str):
            raise TypeError(
                f"documents[{position}].page_content must be a str, got "
                f"{type(document.page_content).__name__}; SpecPC compresses text only"
            )
    return list(documents)


# ---------------------------------------------------------------------------- compressor
class SpecPCCompressor(BaseDocumentCompressor, _DocumentCompression):
    """Compress retrieved documents to what a small draft model attends to for the query.

    Works wherever LangChain takes a ``BaseDocumentCompressor`` (``ContextualCompressionRetriever``,
    ``DocumentCompressorPipeline``) and, through ``RunnableLambda``, in LCEL chains. All
    documents of one call share one budget, so the draft spends it on the documents that
    matter; kept text is made of verbatim pieces of ``page_content`` joined by the
    separator setting (``" … "`` by default).

    Parameters
    ----------
    draft:
        Draft model (name, folder, hub id or :class:`~specrag.LoadedModel`); loaded on the
        first call, not at construction, and then reused.
    compressor:
        A ready :class:`~specrag.SpecPC` instead of ``draft``/``settings``.
    keep_ratio, max_tokens:
        Budget in draft tokens (the target's with ``target_tokenizer``), shared by the
        documents of a call; neither means the SpecPC's own (0.25 unless ``compressor`` says
        otherwise).
    settings:
        :class:`~specrag.SpecPCSettings` fields, validated at construction.
    instruction:
        Optional task text the draft reads first; never cut.
    drop_empty:
        Leave out documents of which nothing was kept (default). Documents that were empty
        to begin with are passed through.
    sort_by_relevance:
        Return documents by the draft's relevance, highest first, instead of input order.

    Notes
    -----
    Returned documents are new objects (``model_copy``): ``id`` and every metadata entry
    are kept as they were (the metadata dict is copied, values are not), and figures are
    added under ``metadata["specrag"]``. ``callbacks`` are accepted for interface
    compatibility; SpecPC makes no LLM call to report.

    Examples
    --------
    >>> from langchain_classic.retrievers import ContextualCompressionRetriever
    >>> retriever = ContextualCompressionRetriever(
    ...     base_compressor=SpecPCCompressor(keep_ratio=0.3), base_retriever=base
    ... )  # doctest: +SKIP
    """

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Return compressed copies of ``documents`` for ``query`` (see class notes).

        Raises
        ------
        ValueError
            If ``query`` is empty.
        TypeError
            If ``query`` is not a str, or a document's ``page_content`` is not a str.
        """
        docs = _check_documents(documents)
        question = _check_query(query)
        if not docs:
            return []
        return self._compress(docs, question)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """:meth:`compress_documents` with the draft run in a worker thread."""
        docs = _check_documents(documents)
        question = _check_query(query)
        if not docs:
            return []
        return await self._acompress(docs, question)

    def compress_documents_batch(
        self, batches: Sequence[Sequence[Document]], queries: Sequence[str]
    ) -> list[list[Document]]:
        """Several (documents, query) pairs with one :meth:`~specrag.SpecPC.compress_batch`
        call: on a GPU their draft passes share forwards. Each result equals
        ``compress_documents(documents, query)``.

        Raises
        ------
        ValueError
            If ``batches`` and ``queries`` differ in length, or a query is empty.
        """
        pairs = self._checked_pairs(batches, queries)
        requests = self._requests(pairs)
        results = self.get_specpc().compress_batch(requests, keep_ratio=self.keep_ratio, max_tokens=self.max_tokens)
        return self._unbatch(pairs, results)

    async def acompress_documents_batch(
        self, batches: Sequence[Sequence[Document]], queries: Sequence[str]
    ) -> list[list[Document]]:
        """:meth:`compress_documents_batch` with the draft run in a worker thread."""
        pairs = self._checked_pairs(batches, queries)
        specpc = await self.aget_specpc()
        requests = self._requests(pairs)
        results = await specpc.acompress_batch(requests, keep_ratio=self.keep_ratio, max_tokens=self.max_tokens)
        return self._unbatch(pairs, results)

    @staticmethod
    def _checked_pairs(
        batches: Sequence[Sequence[Document]], queries: Sequence[str]
    ) -> list[tuple[list[Document], str]]:
        if len(batches) != len(queries):
            raise ValueError(f"got {len(batches)} document lists but {len(queries)} queries; give one query per list")
        return [(_check_documents(documents), _check_query(query)) for documents, query in zip(batches, queries)]

    def _requests(self, pairs: list[tuple[list[Document], str]]) -> list[CompressRequest]:
        return [
            CompressRequest(documents=[d.page_content for d in docs], question=query, instruction=self.instruction)
            for docs, query in pairs
            if docs
        ]

    def _unbatch(
        self, pairs: list[tuple[list[Document], str]], results: list[CompressionResult]
    ) -> list[list[Document]]:
        pending = iter(results)
        return [self._wrap(docs, next(pending)) if docs else [] for docs, _ in pairs]


# ---------------------------------------------------------------------------- transformer
class SpecPCDocumentTransformer(_DocumentCompression, BaseDocumentTransformer):
    """SpecPC as a ``BaseDocumentTransformer``, for pipelines that pass no query.

    ``DocumentCompressorPipeline`` calls transformers with the documents only. The query
    then comes from ``transform_documents(documents, query=...)`` or, failing that, from
    ``document.metadata[query_key]``. Where you can, put :class:`SpecPCCompressor` in the
    pipeline instead: compressors receive the query directly.

    Parameters
    ----------
    query_key:
        Metadata field holding the query. All documents that carry it must agree (one
        SpecPC call, one question); documents without it are compressed for that query too.
    **fields:
        As :class:`SpecPCCompressor` (draft, compressor, keep_ratio, max_tokens, settings,
        instruction, drop_empty, sort_by_relevance, ...).
    """

    query_key: str = Field("query", description="Metadata field to read the query from.")

    def transform_documents(
        self, documents: Sequence[Document], query: str | None = None, **kwargs: Any
    ) -> Sequence[Document]:
        """Compressed copies of ``documents`` for ``query`` or the metadata's query.

        Raises
        ------
        ValueError
            If there is no query (neither keyword nor metadata), or documents disagree on it.
        TypeError
            On unknown keyword arguments, or non-text ``page_content``.
        """
        docs = _check_documents(documents)
        _reject_kwargs(kwargs)
        if not docs:
            return []
        return self._compress(docs, self._query_for(docs, query))

    async def atransform_documents(
        self, documents: Sequence[Document], query: str | None = None, **kwargs: Any
    ) -> Sequence[Document]:
        """:meth:`transform_documents` with the draft run in a worker thread."""
        docs = _check_documents(documents)
        _reject_kwargs(kwargs)
        if not docs:
            return []
        return await self._acompress(docs, self._query_for(docs, query))

    def _query_for(self, documents: list[Document], query: str | None) -> str:
        if query is not None:
            return _check_query(query)
        found: set[str] = set()
        for position, document in enumerate(documents):
            if self.query_key not in document.metadata:
                continue
            value = document.metadata[self.query_key]
            if not isinstance(value, str):  # checked before the set: a list is unhashable
                raise TypeError(
                    f"documents[{position}].metadata[{self.query_key!r}] must be a str (the query), "
                    f"got {type(value).__name__}; pass query=... instead"
                )
            found.add(value)
        if not found:
            raise ValueError(
                "SpecPCDocumentTransformer needs a query: pass transform_documents(docs, "
                f"query=...) or set metadata[{self.query_key!r}] on the documents (query_key "
                "chooses the field). In a DocumentCompressorPipeline, which passes no query, use "
                "SpecPCCompressor instead: it receives the retriever's query."
            )
        if len(found) > 1:
            raise ValueError(
                f"documents carry {len(found)} different metadata[{self.query_key!r}] values; "
                "one SpecPC call compresses for one query: split the documents by query or "
                "pass query=..."
            )
        return _check_query(found.pop(), name=f"metadata[{self.query_key!r}]")


def _reject_kwargs(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(kwargs)}; SpecPCDocumentTransformer takes only query=..."
        )


# ---------------------------------------------------------------------------- message trimming
def trim_messages_with_specpc(
    messages: Sequence[BaseMessage],
    *,
    compressor: SpecPC,
    max_tokens: int,
    query: str | None = None,
    placeholder: str = TRIMMED_PLACEHOLDER,
    short_message_tokens: int = 32,
) -> list[BaseMessage]:
    """Shrink an agent's older messages against its latest question to a draft-token budget.

    The system message(s) and the last turn (the last ``HumanMessage`` and everything after
    it) stay verbatim, and so do older messages of at most ``short_message_tokens``. The
    text of the remaining older messages (typically long tool outputs) becomes the documents
    of one SpecPC call whose budget is ``max_tokens`` minus the verbatim part, clamped at 0.

    Parameters
    ----------
    messages:
        The history, oldest first.
    compressor:
        The SpecPC whose draft scores and counts tokens.
    max_tokens:
        Budget for all message text, in the compressor's tokens (the draft's, or the target's
        with ``target_tokenizer``). Counts content text only (not chat
        template tokens, not ``tool_calls`` arguments), each text piece encoded on its own.
    query:
        The question to compress against; default the text of the last ``HumanMessage``.
    placeholder:
        Content given to an older message whose text was trimmed away entirely (an
        ``AIMessage`` with ``tool_calls`` gets ``""`` instead, its usual shape). Placeholders
        count against the budget; where even they do not fit, ``""`` is used.
    short_message_tokens:
        Older messages up to this many tokens are kept verbatim (trimming them saves
        little and a placeholder could cost more); 0 compresses every older message.

    Returns
    -------
    list[BaseMessage]
        Same length and order. Unchanged messages are the caller's objects; changed ones are
        copies with only ``content`` replaced, so type, ``id``, ``name``, ``tool_call_id``,
        ``tool_calls`` and ``additional_kwargs`` survive and tool-call pairing stays valid.
        List contents keep their non-text blocks; emptied text blocks are removed.

    Raises
    ------
    ValueError
        If there is no ``HumanMessage``, its text is empty and no ``query`` is given, or
        ``max_tokens`` or ``short_message_tokens`` is negative.
    TypeError
        If ``messages`` holds anything but ``BaseMessage`` objects.
    """
    history = _check_messages(messages)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be an int, got {type(max_tokens).__name__}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if short_message_tokens < 0:
        raise ValueError(f"short_message_tokens must be >= 0, got {short_message_tokens}")
    if not history:
        return []
    last_human = next(
        (index for index in range(len(history) - 1, -1, -1) if isinstance(history[index], HumanMessage)),
        None,
    )
    if last_human is None:
        raise ValueError(
            "trim_messages_with_specpc needs a HumanMessage: the last one starts the turn that "
            "stays verbatim and its text is the question older messages are compressed against"
        )
    if query is None:
        query = "\n".join(text for _, text in _text_pieces(history[last_human].content))
        if not query.strip():
            raise ValueError("the last HumanMessage has no text to compress against; pass query=...")
    question = _check_query(query)

    count_text = compressor.count_tokens  # the compressor's budget count: draft or target tokens

    def count(content: Any) -> int:
        return sum(count_text(text) for _, text in _text_pieces(content))

    plan = split_history(
        [count(message.content) for message in history],
        verbatim=[index >= last_human or isinstance(m, SystemMessage) for index, m in enumerate(history)],
        max_tokens=max_tokens,
        short_message_tokens=short_message_tokens,
    )
    if sum(count(history[index].content) for index in plan.shrinkable) <= plan.budget:
        return list(history)
    sources = [
        (index, block, text) for index in plan.shrinkable for block, text in _text_pieces(history[index].content)
    ]

    def rebuild(texts: list[str], filler: str) -> tuple[list[BaseMessage], int]:
        """Messages with their pieces replaced by ``texts``, and the tokens spent."""
        new_texts: dict[int, dict[int | None, str]] = {}
        for (index, block, _), text in zip(sources, texts, strict=True):
            new_texts.setdefault(index, {})[block] = text
        trimmed = list(history)
        spent = 0
        for index in plan.shrinkable:
            message = history[index]
            content = _replace_text(message.content, new_texts.get(index, {}))
            if _is_empty(content):
                has_calls = isinstance(message, AIMessage) and bool(message.tool_calls)
                content = "" if has_calls else filler
            trimmed[index] = message.model_copy(update={"content": content})
            spent += count(content)
        return trimmed, spent

    texts = trim_pieces(
        [text for _, _, text in sources],
        question,
        compressor=compressor,
        budget=plan.budget,
        spent=lambda candidate: rebuild(candidate, placeholder)[1],
        count=count_text,
    )
    trimmed, spent = rebuild(texts, placeholder)
    if spent > plan.budget:  # even the placeholders do not fit
        trimmed, spent = rebuild(texts, "")
    return trimmed


def _check_messages(messages: object) -> list[BaseMessage]:
    if isinstance(messages, PromptValue):
        return messages.to_messages()
    if isinstance(messages, (str, bytes, BaseMessage)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a sequence of BaseMessage, got {type(messages).__name__}")
    for position, message in enumerate(messages):
        if not isinstance(message, BaseMessage):
            raise TypeError(f"messages[{position}] must be a BaseMessage, got {type(message).__name__}")
    return list(messages)


def _text_pieces(content: Any) -> list[tuple[int | None, str]]:
    """Text of a message content: ``(None, text)`` for a string, ``(block index, text)`` for
    each text block of a list content (plain strings or ``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return [(None, content)]
    pieces: list[tuple[int | None, str]] = []
    if isinstance(content, list):
        for position, block in enumerate(content):
            is_text_block = isinstance(block, dict) and block.get("type") == "text"
            text = block if isinstance(block, str) else block.get("text") if is_text_block else None
            if isinstance(text, str):
                pieces.append((position, text))
    return pieces


def _replace_text(content: Any, new_texts: dict[int | None, str]) -> Any:
    """``content`` with its text pieces replaced; emptied text blocks are removed."""
    if isinstance(content, str):
        return new_texts.get(None, content)
    rebuilt: list[Any] = []
    for position, block in enumerate(content):
        if position not in new_texts:
            rebuilt.append(block)
        elif new_texts[position]:
            text = new_texts[position]
            rebuilt.append(text if isinstance(block, str) else {**block, "text": text})
    return rebuilt


def _is_empty(content: Any) -> bool:
    return not content if isinstance(content, list) else not str(content).strip()


class SpecPCMessageTrimmer(RunnableSerializable[Sequence[BaseMessage] | PromptValue, list[BaseMessage]], SpecPCSource):
    """:func:`trim_messages_with_specpc` as a Runnable, to put before a chat model in LCEL.

    ``prompt | SpecPCMessageTrimmer(max_tokens=2048) | chat_model``: takes a message list or a
    ``PromptValue`` and returns the trimmed message list (see the function for what stays
    verbatim and what survives). The draft is loaded on first use, like
    :class:`SpecPCCompressor`, or given ready as ``compressor``.
    """

    max_tokens: int = Field(ge=0, description="Budget for all message text (draft's or target_tokenizer's tokens).")
    query: str | None = Field(None, description="Question to compress against; default the last human turn.")
    placeholder: str = Field(TRIMMED_PLACEHOLDER, description="Content of a fully trimmed message.")
    short_message_tokens: int = Field(32, ge=0, description="Older messages this short stay verbatim.")

    def _trim(self, messages: Sequence[BaseMessage] | PromptValue) -> list[BaseMessage]:
        return trim_messages_with_specpc(
            _check_messages(messages),
            compressor=self.get_specpc(),
            max_tokens=self.max_tokens,
            query=self.query,
            placeholder=self.placeholder,
            short_message_tokens=self.short_message_tokens,
        )

    async def _atrim(self, messages: Sequence[BaseMessage] | PromptValue) -> list[BaseMessage]:
        return await asyncio.to_thread(self._trim, messages)

    def invoke(
        self,
        input: Sequence[BaseMessage] | PromptValue,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """Trim ``input`` (messages or a PromptValue) to the budget."""
        return self._call_with_config(self._trim, input, config)

    async def ainvoke(
        self,
        input: Sequence[BaseMessage] | PromptValue,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """:meth:`invoke` with the draft run in a worker thread."""
        return await self._acall_with_config(self._atrim, input, config)


# ---------------------------------------------------------------------------- SpecKV chat model
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
_CALL_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed")


def _speckv_turns(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as chat-template turns (``{"role", "content"}`` and tool fields).

    Text blocks of list contents are joined; any other block (image, audio, file) is an
    error rather than silently dropped: the model would answer without having seen it. An
    ``AIMessage``'s ``tool_calls`` and a ``ToolMessage`` become the transformers tool-use
    form (see :data:`specrag.core.speckv.decoding.Message`), which the target's chat
    template renders or, lacking tool support, refuses: they are never dropped.
    """
    turns = []
    for position, message in enumerate(_check_messages(messages)):
        chat_role = getattr(message, "role", None)
        role = chat_role if message.type == "chat" else _ROLES.get(message.type)
        if not isinstance(role, str):
            raise TypeError(f"messages[{position}]: ChatSpecKV cannot send {message.type!r} messages")
        turn: dict[str, Any] = {"role": role, "content": _turn_text(position, message)}
        if isinstance(message, AIMessage):
            if message.invalid_tool_calls:
                raise ValueError(
                    f"messages[{position}] has an invalid tool call (arguments that are not JSON); fix or "
                    "remove it: ChatSpecKV will not send the model a call it cannot render"
                )
            if message.tool_calls:
                turn["tool_calls"] = [
                    {
                        "type": "function",
                        "id": call["id"],
                        "function": {"name": call["name"], "arguments": call["args"]},
                    }
                    for call in message.tool_calls
                ]
        if isinstance(message, ToolMessage):
            turn["tool_call_id"] = message.tool_call_id
            if message.name:
                turn["name"] = message.name
        turns.append(turn)
    return turns


def _turn_text(position: int, message: BaseMessage) -> str:
    """The text of ``message``; tool-call blocks that ``tool_calls`` already carries are
    skipped, any other non-text block is an error."""
    content = message.content
    if isinstance(content, str):
        return content
    call_ids = {call["id"] for call in message.tool_calls} if isinstance(message, AIMessage) else set()
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call") and block.get("id") in call_ids:
            continue  # rendered from message.tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(
                f"messages[{position}] has a {kind!r} content block; ChatSpecKV reads text "
                "only, besides tool calls (no images, audio or files)"
            )
    return "".join(parts)


class ChatSpecKV(SpecKVSource, BaseChatModel):
    """A local Hugging Face chat model whose KV cache stays within a budget (SpecKV).

    A small draft model writes an approximate answer; the target's own attention from that
    answer (and from the prompt's last tokens) decides which prompt entries each layer keeps
    in its cache. Long RAG prompts then decode with a cache of ``budget`` entries per layer
    instead of the whole prompt. Messages go through the target tokenizer's chat template.

    Parameters
    ----------
    target, draft:
        Target and draft models (names, folders, hub ids or :class:`~specrag.LoadedModel`);
        loaded on first use, not at construction. ``draft=None`` evicts from the prompt's
        last tokens only.
    engine:
        A ready :class:`~specrag.SpecKV` instead of target/draft/budget/settings.
    budget:
        Cache entries kept per layer after prefill (required without ``engine``).
    settings:
        :class:`~specrag.speckv.SpecKVSettings` fields (window, rescore_every, ...),
        validated at construction.
    max_tokens, temperature, top_p, top_k, seed, stop:
        Generation defaults; ``temperature=0`` is greedy. ``max_tokens``, ``temperature``,
        ``top_p``, ``top_k`` and ``seed`` can be overridden per call (``invoke(..., seed=3)``
        or ``bind``), ``stop`` through LangChain's ``stop=`` argument.
    streaming:
        Make ``invoke`` stream internally (LangChain's standard flag).

    Notes
    -----
    Not supported, and declared so: tool calling (``bind_tools``), structured output,
    image / audio / file inputs, API keys, timeouts and retries (a local model has none:
    such keywords are rejected, not ignored). A history *with* tool calls and tool results
    is rendered through the target's chat template when it supports tools, and refused with
    one line when it does not. Usage metadata reports target tokens
    (``input_tokens`` = prompt after the chat template, ``output_tokens`` = generated);
    ``response_metadata["speckv"]`` carries the cache figures. ``ainvoke`` / ``astream``
    run generation in a worker thread, so the event loop never blocks; one instance
    generates one request at a time (see :class:`~specrag.SpecKV`).

    Examples
    --------
    >>> chat = ChatSpecKV(target="qwen2.5-coder-1.5b", draft="qwen2.5-coder-0.5b", budget=256)
    >>> chat.invoke("Summarise: ...").content  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    max_tokens: int = Field(256, gt=0, description="Most new tokens per answer.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; > 0 samples.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus cut when sampling.")
    top_k: int = Field(0, ge=0, description="Top-k cut when sampling (0 = none).")
    seed: int | None = Field(None, description="Seed of each call's private generator.")
    stop: list[str] | None = Field(None, description="Default stop strings.")
    streaming: bool = Field(False, description="Stream internally on invoke.")

    # ------------------------------------------------------------------ LangChain hooks
    @property
    def _llm_type(self) -> str:
        return "specrag-speckv"

    @property
    def model_name(self) -> str:
        """Name of the target model (what traces report)."""
        return self.target_name

    @property
    def _identifying_params(self) -> dict[str, Any]:
        engine = self.engine
        draft = engine.draft if engine is not None else self.draft
        return {
            "target": self.model_name,
            "draft": draft.name if isinstance(draft, LoadedModel) else draft,
            "budget": engine.budget if engine is not None else self.budget,
            "settings": engine.settings.model_dump() if engine is not None else self.settings,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="specrag",
            ls_model_name=str(kwargs.get("model", self.model_name)),
            ls_model_type="chat",
            ls_temperature=float(kwargs.get("temperature", self.temperature)),
            ls_max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
        )
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        result = self.get_engine().generate(_speckv_turns(messages), **options)
        return self._chat_result(result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        turns = _speckv_turns(messages)
        engine = await self.aget_engine()
        return self._chat_result(await engine.agenerate(turns, **options))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        stream = self.get_engine().stream(_speckv_turns(messages), **options)
        try:
            for delta in stream:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager is not None:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
        finally:
            stream.close()  # stops generation if the caller stopped reading
        yield self._last_chunk(stream.result)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        turns = _speckv_turns(messages)
        engine = await self.aget_engine()
        stream = engine.astream(turns, **options)
        try:
            async for delta in stream:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
        finally:
            await stream.aclose()  # frees the engine if the caller stopped reading
        yield self._last_chunk(stream.result)

    # ------------------------------------------------------------------ helpers
    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Engine keyword arguments: instance defaults, per-call overrides, stop strings."""
        unknown = sorted(set(kwargs) - set(_CALL_OPTIONS))
        if unknown:
            raise TypeError(
                f"ChatSpecKV got unsupported call option(s) {unknown}; it accepts "
                f"{list(_CALL_OPTIONS)} and stop (no tools, no structured output)"
            )
        values = {name: kwargs.get(name, getattr(self, name)) for name in _CALL_OPTIONS}
        return {
            "max_new_tokens": values["max_tokens"],
            "temperature": values["temperature"],
            "top_p": values["top_p"],
            "top_k": values["top_k"],
            "seed": values["seed"],
            "stop": stop if stop is not None else self.stop,
        }

    def _metadata(self, result: SpecKVResult) -> tuple[UsageMetadata, dict[str, Any]]:
        usage = UsageMetadata(
            input_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            total_tokens=result.prompt_tokens + result.output_tokens,
        )
        figures = result.model_dump(exclude={"text", "token_ids", "compression"})
        response = {
            "finish_reason": result.finish_reason,
            "model_name": self.model_name,
            "model_provider": "specrag",
            "speckv": figures,
        }
        return usage, response

    def _chat_result(self, result: SpecKVResult) -> ChatResult:
        usage, response = self._metadata(result)
        message = AIMessage(content=result.text, usage_metadata=usage, response_metadata=response)
        info = {"finish_reason": result.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _last_chunk(self, result: SpecKVResult) -> ChatGenerationChunk:
        usage, response = self._metadata(result)
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=response, chunk_position="last"),
            generation_info={"finish_reason": result.finish_reason},
        )
