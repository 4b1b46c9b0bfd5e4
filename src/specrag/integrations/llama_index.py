"""LlamaIndex adapter over :class:`specrag.SpecPC`: a node postprocessor.

Why this shape
--------------
A ``BaseNodePostprocessor`` is what query engines call between retrieval and synthesis
(``index.as_query_engine(node_postprocessors=[...])``, ``RetrieverQueryEngine``), with the
query bundle at hand, which is exactly where SpecPC needs to sit: after retrieval, before
the answering LLM reads the nodes.

Nodes flow one way: ``NodeWithScore`` -> plain strings -> SpecPC ->
:class:`~specrag.CompressionResult` -> *copies* of the nodes with compressed text. The
caller's nodes are never mutated; ids, metadata and relationships are kept. Compression
figures go under one metadata key, :data:`METADATA_KEY` (``"specrag"``)::

    {"original_tokens": int, "kept_tokens": int, "relevance": float,
     "spans": [(start, end), ...]}   # character spans kept, in the original node text

and that key is excluded from the LLM and embedding views of the node's metadata, so the
figures never eat the tokens the compression saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

try:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
        TextBlock,
        ToolCallBlock,
    )
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import (
        llm_chat_callback,
        llm_completion_callback,
    )
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, ImageNode, Node, NodeWithScore, QueryBundle, TextNode
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "specrag.llama_index needs llama-index-core; install it with: pip install 'specrag[llama-index]'"
    ) from error

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from ..core.models import LoadedModel
from ..core.speckv import SpecKVResult
from ..core.specpc import CompressedDocument, CompressionResult, CompressRequest
from .sources import SpecKVSource, SpecPCSource

__all__ = ["METADATA_KEY", "SpecKVLLM", "SpecPCPostprocessor"]

METADATA_KEY = "specrag"
"""Metadata key under which compression figures are stored on returned nodes."""


class SpecPCPostprocessor(SpecPCSource, BaseNodePostprocessor):
    """Compress retrieved nodes to what a small draft model attends to for the query.

    All nodes with text in one call share one budget, so the draft spends it on the nodes
    that matter; kept text is made of verbatim pieces of the node text joined by the
    separator setting (``" … "`` by default). A node has text when it is a ``TextNode``, an
    ``ImageNode`` with a caption (its text; the image is kept), or a ``Node`` such as
    ``Document`` whose ``text_resource`` holds text (its other resources are kept). Nodes
    without text pass through untouched and cost nothing.

    Parameters
    ----------
    draft:
        Draft model (name, folder, hub id or :class:`~specrag.LoadedModel`); loaded on the
        first call, not at construction, and then reused.
    compressor:
        A ready :class:`~specrag.SpecPC` instead of ``draft``/``settings``.
    keep_ratio, max_tokens:
        Budget in draft tokens, shared by the nodes of a call; neither means the SpecPC's
        own (0.25 unless ``compressor`` says otherwise).
    settings:
        :class:`~specrag.SpecPCSettings` fields, validated at construction.
    instruction:
        Optional task text the draft reads first; never cut.
    drop_empty:
        Leave out nodes of which nothing was kept (default). Nodes with empty text to begin
        with are passed through.
    set_score:
        Replace each node's ``score`` with the draft's relevance (0 to 1); the retriever's
        score is kept otherwise.

    Examples
    --------
    >>> engine = index.as_query_engine(
    ...     node_postprocessors=[SpecPCPostprocessor(keep_ratio=0.3)]
    ... )  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    keep_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="Share of tokens kept across all nodes (the draft's, or target_tokenizer's)."
    )
    max_tokens: int | None = Field(
        None, ge=0, description="Draft tokens kept across all nodes (instead of keep_ratio)."
    )
    instruction: str | None = Field(None, description="Task instruction the draft reads before the nodes (never cut).")
    drop_empty: bool = Field(True, description="Leave out nodes of which nothing was kept.")
    set_score: bool = Field(False, description="Set each node's score to the draft's relevance.")

    @classmethod
    def class_name(cls) -> str:
        return "SpecPCPostprocessor"

    @model_validator(mode="after")
    def _check_budget(self) -> SpecPCPostprocessor:
        if self.keep_ratio is not None and self.max_tokens is not None:
            raise ValueError("give keep_ratio or max_tokens, not both")
        return self

    # ------------------------------------------------------------------ postprocessing
    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """Compressed copies of ``nodes`` for the query (see the class notes).

        Raises
        ------
        ValueError
            Without a query bundle, or with an empty query.
        TypeError
            If ``nodes`` is not a list of ``NodeWithScore``.
        """
        query = _check_query(query_bundle)
        text_positions = _text_positions(nodes)
        if not text_positions:
            return list(nodes)
        result = self.get_specpc().compress(
            _texts(nodes, text_positions),
            query,
            self.instruction,
            keep_ratio=self.keep_ratio,
            max_tokens=self.max_tokens,
        )
        return self._wrap(nodes, text_positions, result)

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """:meth:`_postprocess_nodes` with the draft run in a worker thread."""
        query = _check_query(query_bundle)
        text_positions = _text_positions(nodes)
        if not text_positions:
            return list(nodes)
        specpc = await self.aget_specpc()
        result = await specpc.acompress(
            _texts(nodes, text_positions),
            query,
            self.instruction,
            keep_ratio=self.keep_ratio,
            max_tokens=self.max_tokens,
        )
        return self._wrap(nodes, text_positions, result)

    def postprocess_nodes_batch(
        self, batches: Sequence[list[NodeWithScore]], queries: Sequence[str | QueryBundle]
    ) -> list[list[NodeWithScore]]:
        """Several (nodes, query) pairs with one :meth:`~specrag.SpecPC.compress_batch` call:
        on a GPU their draft passes share forwards. Each result equals
        ``postprocess_nodes(nodes, query_str=query)``.

        Raises
        ------
        ValueError
            If ``batches`` and ``queries`` differ in length, or a query is empty.
        """
        requests, plans = self._batch_requests(batches, queries)
        results = self.get_specpc().compress_batch(requests, keep_ratio=self.keep_ratio, max_tokens=self.max_tokens)
        return self._unbatch(batches, plans, results)

    async def apostprocess_nodes_batch(
        self, batches: Sequence[list[NodeWithScore]], queries: Sequence[str | QueryBundle]
    ) -> list[list[NodeWithScore]]:
        """:meth:`postprocess_nodes_batch` with the draft run in a worker thread."""
        requests, plans = self._batch_requests(batches, queries)
        specpc = await self.aget_specpc()
        results = await specpc.acompress_batch(requests, keep_ratio=self.keep_ratio, max_tokens=self.max_tokens)
        return self._unbatch(batches, plans, results)

    # ------------------------------------------------------------------ helpers
    def _batch_requests(
        self, batches: Sequence[list[NodeWithScore]], queries: Sequence[str | QueryBundle]
    ) -> tuple[list[CompressRequest], list[list[int] | None]]:
        """One request per pair with text nodes; per pair its text positions (None: no text)."""
        if len(batches) != len(queries):
            raise ValueError(f"got {len(batches)} node lists but {len(queries)} queries; give one query per list")
        requests: list[CompressRequest] = []
        plans: list[list[int] | None] = []
        for nodes, query in zip(batches, queries, strict=True):
            bundle = query if isinstance(query, QueryBundle) else QueryBundle(query_str=query)
            question = _check_query(bundle)
            positions = _text_positions(nodes)
            plans.append(positions or None)
            if positions:
                requests.append(
                    CompressRequest(documents=_texts(nodes, positions), question=question, instruction=self.instruction)
                )
        return requests, plans

    def _unbatch(
        self,
        batches: Sequence[list[NodeWithScore]],
        plans: list[list[int] | None],
        results: list[CompressionResult],
    ) -> list[list[NodeWithScore]]:
        pending = iter(results)
        return [
            list(nodes) if positions is None else self._wrap(nodes, positions, next(pending))
            for nodes, positions in zip(batches, plans, strict=True)
        ]

    def _wrap(
        self, nodes: list[NodeWithScore], text_positions: list[int], result: CompressionResult
    ) -> list[NodeWithScore]:
        compressed_at = dict(zip(text_positions, result.documents, strict=True))
        output: list[NodeWithScore] = []
        for position, item in enumerate(nodes):
            compressed = compressed_at.get(position)
            if compressed is None:
                output.append(item)  # non-text node: untouched
            elif not (self.drop_empty and compressed.is_dropped):
                output.append(self._copy(item, compressed))
        return output

    def _copy(self, item: NodeWithScore, compressed: CompressedDocument) -> NodeWithScore:
        """A deep copy of ``item`` with compressed text, figures and (maybe) a new score."""
        node = item.node.model_copy(deep=True)
        _set_text(node, compressed.text)
        node.metadata[METADATA_KEY] = _figures(compressed)
        for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
            if METADATA_KEY not in excluded:
                excluded.append(METADATA_KEY)
        score = compressed.relevance if self.set_score else item.score
        return item.model_copy(update={"node": node, "score": score})


def _figures(compressed: CompressedDocument) -> dict[str, Any]:
    return {
        "original_tokens": compressed.original_tokens,
        "kept_tokens": compressed.kept_tokens,
        "relevance": compressed.relevance,
        "spans": list(compressed.spans),
    }


def _check_query(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise ValueError(
            "SpecPCPostprocessor needs the query: call postprocess_nodes(nodes, query_str=...) "
            "or pass a QueryBundle (query engines do this for you)"
        )
    query = query_bundle.query_str
    if not isinstance(query, str) or not query.strip():
        raise ValueError("SpecPCPostprocessor needs a non-empty query_str to score nodes against")
    return query


def _node_text(node: BaseNode) -> str | None:
    """The text SpecPC compresses in ``node``, or None for a node without text.

    ``Document`` is no ``TextNode`` in llama-index-core 0.14: it (like any ``Node``) keeps its
    text in ``text_resource``, so reading ``TextNode.text`` alone let whole documents pass
    uncompressed. An ``ImageNode``'s text is its caption: compressed only when there is one.
    """
    if isinstance(node, ImageNode):
        return node.text if isinstance(node.text, str) and node.text else None
    if isinstance(node, TextNode):
        return node.text if isinstance(node.text, str) else None
    if isinstance(node, Node) and node.text_resource is not None and isinstance(node.text_resource.text, str):
        return node.text_resource.text
    return None


def _set_text(node: BaseNode, text: str) -> None:
    """Replace the text :func:`_node_text` read, keeping every other field (a ``Node``'s
    path, url, mimetype and other resources included)."""
    if isinstance(node, TextNode):
        node.set_content(text)
    elif isinstance(node, Node) and node.text_resource is not None:
        node.text_resource = node.text_resource.model_copy(update={"text": text})
    else:  # pragma: no cover - _text_positions only selects the two kinds above
        raise TypeError(f"{type(node).__name__} holds no text to replace")


def _text_positions(nodes: object) -> list[int]:
    """Positions of the nodes SpecPC compresses: every node with text (see _node_text)."""
    if not isinstance(nodes, list):
        raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}")
    positions = []
    for position, item in enumerate(nodes):
        if not isinstance(item, NodeWithScore):
            raise TypeError(f"nodes[{position}] must be a NodeWithScore, got {type(item).__name__}")
        if _node_text(item.node) is not None:
            positions.append(position)
    return positions


def _texts(nodes: list[NodeWithScore], positions: list[int]) -> list[str]:
    """Texts of the nodes at ``positions``, which :func:`_text_positions` found to have text."""
    return [cast(str, _node_text(nodes[position].node)) for position in positions]


# ---------------------------------------------------------------------------- SpecKV LLM
_FALLBACK_CONTEXT_WINDOW = 4096  # when the target's config states no position limit


def _speckv_turns(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as chat-template turns (``{"role", "content"}`` and tools).

    Text blocks are read; an image, audio or document block is an error rather than
    silently dropped: the model would answer without having seen it. Tool calls (as
    ``ToolCallBlock`` blocks or OpenAI-style ``additional_kwargs["tool_calls"]``) and tool
    results (role ``tool``, with ``additional_kwargs["tool_call_id"]``) become the
    transformers tool-use form, which the target's chat template renders or, lacking tool
    support, refuses: they are never dropped.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of ChatMessage, got {type(messages).__name__}")
    turns = []
    for position, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise TypeError(f"messages[{position}] must be a ChatMessage, got {type(message).__name__}")
        calls: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, ToolCallBlock):
                calls.append(_tool_call(block.tool_call_id, block.tool_name, block.tool_kwargs))
            elif not isinstance(block, TextBlock):
                raise ValueError(
                    f"messages[{position}] has a {type(block).__name__}; SpecKVLLM reads text "
                    "only, besides tool calls (no images, audio or documents)"
                )
        seen = {call.get("id") for call in calls}
        for call in message.additional_kwargs.get("tool_calls") or []:
            converted = _openai_tool_call(position, call)
            if converted.get("id") is None or converted["id"] not in seen:
                calls.append(converted)
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        if role == "function":  # the legacy name of a tool result
            role = "tool"
        turn: dict[str, Any] = {"role": role, "content": message.content or ""}
        if calls:
            turn["tool_calls"] = calls
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if isinstance(message.additional_kwargs.get(key), str):
                    turn[key] = message.additional_kwargs[key]
        turns.append(turn)
    return turns


def _tool_call(call_id: object, name: str, arguments: object) -> dict[str, Any]:
    """One tool call in the transformers form; JSON-string arguments become a dict."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments or {}}}
    if isinstance(call_id, str):
        call["id"] = call_id
    return call


def _openai_tool_call(position: int, call: object) -> dict[str, Any]:
    """An OpenAI-style tool call (a dict, or the client's object) in the transformers form."""

    def field(owner: object, name: str) -> object:
        return owner.get(name) if isinstance(owner, Mapping) else getattr(owner, name, None)

    function = field(call, "function")
    name = field(function, "name")
    if not isinstance(name, str):
        raise ValueError(
            f"messages[{position}].additional_kwargs['tool_calls'] holds a call without a function name; "
            "SpecKVLLM will not send the model a call it cannot render"
        )
    return _tool_call(field(call, "id"), name, field(function, "arguments"))


class SpecKVLLM(SpecKVSource, CustomLLM):
    """A local Hugging Face LLM whose KV cache stays within a budget (SpecKV), for LlamaIndex.

    Works as ``Settings.llm`` and in query engines (``index.as_query_engine(llm=...)``):
    ``chat`` / ``stream_chat`` render messages with the target tokenizer's chat template
    (``metadata.is_chat_model`` is True, so query engines use them); ``complete`` /
    ``stream_complete`` send the prompt as raw text (through ``completion_to_prompt`` when
    given), like a completion endpoint.

    Parameters
    ----------
    target, draft:
        Target and draft models (names, folders, hub ids or :class:`~specrag.LoadedModel`),
        loaded on first use. ``draft=None`` evicts from the prompt's last tokens only.
    engine:
        A ready :class:`~specrag.SpecKV` instead of target/draft/budget/settings.
    budget:
        Cache entries kept per layer after prefill (required without ``engine``).
    settings:
        :class:`~specrag.speckv.SpecKVSettings` fields, validated at construction.
    max_new_tokens, temperature, top_p, top_k, seed, stop:
        Generation defaults (``temperature=0`` is greedy); the first five can be
        overridden per call as keyword arguments.
    context_window:
        What ``metadata`` reports; default the target's position limit. The budget does not
        shorten what the model reads (the whole prompt is prefilled), only what it keeps.

    Notes
    -----
    Responses carry ``raw`` = the engine's figures (cache entries, KV bytes, seconds, finish
    reason) and ``additional_kwargs`` = ``{"prompt_tokens", "completion_tokens",
    "total_tokens"}``. Async methods run generation in a worker thread. No function
    calling (a history with tool calls and results is rendered through the target's chat
    template when it supports tools, refused with one line when not), no multimodal input.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    max_new_tokens: int = Field(256, gt=0, description="Most new tokens per answer.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; > 0 samples.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus cut when sampling.")
    top_k: int = Field(0, ge=0, description="Top-k cut when sampling (0 = none).")
    seed: int | None = Field(None, description="Seed of each call's private generator.")
    stop: list[str] | None = Field(None, description="Stop strings.")
    context_window: int | None = Field(
        None, gt=0, description="Reported context window; default the target's position limit."
    )

    @classmethod
    def class_name(cls) -> str:
        return "SpecKVLLM"

    # ------------------------------------------------------------------ LLM interface
    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output length, chat-ness and the target's name."""
        return LLMMetadata(
            context_window=self._context_window(),
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self.target_name,
        )

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete raw text (``completion_to_prompt`` applied unless ``formatted``)."""
        options = self._options(kwargs)
        result = self.get_engine().generate(self._completion_prompt(prompt, formatted), **options)
        return CompletionResponse(text=result.text, **self._extras(result))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """:meth:`complete` as growing responses; ``delta`` holds each new piece."""
        options = self._options(kwargs)
        stream = self.get_engine().stream(self._completion_prompt(prompt, formatted), **options)

        def responses() -> CompletionResponseGen:
            text = ""
            try:
                for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)
            finally:
                stream.close()  # stops generation if the caller stopped reading
            yield CompletionResponse(text=text, delta="", **self._extras(stream.result))

        return responses()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer chat messages, rendered with the target tokenizer's chat template."""
        options = self._options(kwargs)
        result = self.get_engine().generate(_speckv_turns(messages), **options)
        return ChatResponse(message=_assistant(result.text), **self._extras(result))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """:meth:`chat` as growing responses; ``delta`` holds each new piece."""
        options = self._options(kwargs)
        stream = self.get_engine().stream(_speckv_turns(messages), **options)

        def responses() -> ChatResponseGen:
            text = ""
            try:
                for delta in stream:
                    text += delta
                    yield ChatResponse(message=_assistant(text), delta=delta)
            finally:
                stream.close()
            yield ChatResponse(message=_assistant(text), delta="", **self._extras(stream.result))

        return responses()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """:meth:`complete` in a worker thread."""
        options = self._options(kwargs)
        engine = await self.aget_engine()
        result = await engine.agenerate(self._completion_prompt(prompt, formatted), **options)
        return CompletionResponse(text=result.text, **self._extras(result))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` with generation in a worker thread."""
        options = self._options(kwargs)
        engine = await self.aget_engine()
        stream = engine.astream(self._completion_prompt(prompt, formatted), **options)

        async def responses() -> CompletionResponseAsyncGen:
            text = ""
            try:
                async for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)
            finally:
                await stream.aclose()
            yield CompletionResponse(text=text, delta="", **self._extras(stream.result))

        return responses()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` in a worker thread."""
        options = self._options(kwargs)
        turns = _speckv_turns(messages)
        engine = await self.aget_engine()
        result = await engine.agenerate(turns, **options)
        return ChatResponse(message=_assistant(result.text), **self._extras(result))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` with generation in a worker thread."""
        options = self._options(kwargs)
        turns = _speckv_turns(messages)
        engine = await self.aget_engine()
        stream = engine.astream(turns, **options)

        async def responses() -> ChatResponseAsyncGen:
            text = ""
            try:
                async for delta in stream:
                    text += delta
                    yield ChatResponse(message=_assistant(text), delta=delta)
            finally:
                await stream.aclose()
            yield ChatResponse(message=_assistant(text), delta="", **self._extras(stream.result))

        return responses()

    # ------------------------------------------------------------------ helpers
    def _context_window(self) -> int:
        if self.context_window is not None:
            return self.context_window
        loaded = self.engine.target if self.engine is not None else self.target
        if not isinstance(loaded, LoadedModel):
            loaded = self.get_engine().target  # given by name: load it to know
        return loaded.max_positions or _FALLBACK_CONTEXT_WINDOW

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        if formatted:
            return prompt
        # Typed Optional by LlamaIndex, but its validators replace None with the identity default.
        to_prompt = cast("Callable[[str], str]", self.completion_to_prompt)
        return to_prompt(prompt)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Engine keyword arguments: instance defaults overridden by per-call values."""
        names = ("max_new_tokens", "temperature", "top_p", "top_k", "seed")
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"SpecKVLLM got unsupported option(s) {unknown}; it accepts {list(names)}")
        options = {name: kwargs.get(name, getattr(self, name)) for name in names}
        options["stop"] = self.stop
        return options

    def _extras(self, result: SpecKVResult) -> dict[str, Any]:
        """``raw`` figures and token counts for a response."""
        return {
            "raw": result.model_dump(exclude={"text", "compression"}),
            "additional_kwargs": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.output_tokens,
                "total_tokens": result.prompt_tokens + result.output_tokens,
            },
        }


def _assistant(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)
