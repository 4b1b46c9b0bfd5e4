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

import asyncio
import threading
from typing import Any

try:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "specrag.llama_index needs llama-index-core; install it with: "
        "pip install 'specrag[llama-index]'"
    ) from error

from pydantic import (
    ConfigDict,
    Field,
    InstanceOf,
    PrivateAttr,
    ValidationError,
    field_serializer,
    model_validator,
)

from .models import LoadedModel
from .result import CompressedDocument, CompressionResult
from .specpc import DEFAULT_DRAFT, SpecPC, SpecPCSettings

__all__ = ["METADATA_KEY", "SpecPCPostprocessor"]

METADATA_KEY = "specrag"
"""Metadata key under which compression figures are stored on returned nodes."""

_BUILD_LOCK = threading.Lock()  # one lazy SpecPC build at a time (loading a draft is slow)


class SpecPCPostprocessor(BaseNodePostprocessor):
    """Compress retrieved nodes to what a small draft model attends to for the query.

    All text nodes of one call share one budget, so the draft spends it on the nodes that
    matter; kept text is made of verbatim pieces of the node text joined by the separator
    setting (``" … "`` by default). Non-text nodes (``ImageNode`` and any node that is not a
    ``TextNode``) pass through untouched and cost nothing.

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

    draft: InstanceOf[LoadedModel] | str = Field(
        DEFAULT_DRAFT,
        description="Draft model: a LoadedModel, bundle name, local folder or hub id.",
    )
    compressor: InstanceOf[SpecPC] | None = Field(
        None,
        exclude=True,
        description="A ready SpecPC to use instead of building one from draft/settings.",
    )
    keep_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="Share of draft tokens kept across all nodes."
    )
    max_tokens: int | None = Field(
        None, ge=0, description="Draft tokens kept across all nodes (instead of keep_ratio)."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="SpecPCSettings fields passed to SpecPC (window, ...)."
    )
    instruction: str | None = Field(
        None, description="Task instruction the draft reads before the nodes (never cut)."
    )
    device: str = Field("auto", description="Where to load draft when it is given by name.")
    dtype: str = Field("auto", description="Weights dtype when draft is given by name.")
    progress: bool = Field(
        False, description="Show SpecPC's progress bar on inputs that need several draft passes."
    )
    drop_empty: bool = Field(True, description="Leave out nodes of which nothing was kept.")
    set_score: bool = Field(False, description="Set each node's score to the draft's relevance.")

    _specpc: SpecPC | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SpecPCPostprocessor"

    @model_validator(mode="after")
    def _check_fields(self) -> SpecPCPostprocessor:
        if self.keep_ratio is not None and self.max_tokens is not None:
            raise ValueError("give keep_ratio or max_tokens, not both")
        if self.compressor is not None:
            clashing = sorted({"draft", "settings", "device", "dtype"} & self.model_fields_set)
            if clashing:
                raise ValueError(
                    f"compressor is a ready SpecPC, so {', '.join(clashing)} would be ignored; "
                    "give either compressor or draft/settings, not both"
                )
            return self
        # Fail at construction, not on the first query, and without loading a model.
        # SpecPCSettings ignores unknown names, so a typo would otherwise pass silently.
        unknown = sorted(set(self.settings) - set(SpecPCSettings.model_fields))
        if unknown:
            raise ValueError(
                f"unknown SpecPC settings {unknown}; known: {sorted(SpecPCSettings.model_fields)}"
            )
        try:
            SpecPCSettings(**self.settings)
        except ValidationError as error:
            raise ValueError(f"invalid SpecPC settings: {error}") from None
        return self

    @field_serializer("draft")
    def _draft_name(self, draft: LoadedModel | str) -> str:
        # to_dict()/to_json() must not try to serialise a network; the name identifies it.
        return draft.name if isinstance(draft, LoadedModel) else draft

    def __repr_args__(self) -> Any:
        # A LoadedModel's repr prints the whole network; its name is what identifies it.
        for name, value in super().__repr_args__():
            yield name, (value.name if isinstance(value, LoadedModel) else value)

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
        result = self._get_specpc().compress(
            [nodes[position].node.text for position in text_positions],
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
        specpc = self.compressor or self._specpc or await asyncio.to_thread(self._get_specpc)
        result = await specpc.acompress(
            [nodes[position].node.text for position in text_positions],
            query,
            self.instruction,
            keep_ratio=self.keep_ratio,
            max_tokens=self.max_tokens,
        )
        return self._wrap(nodes, text_positions, result)

    # ------------------------------------------------------------------ helpers
    def _get_specpc(self) -> SpecPC:
        """The SpecPC to use, built on first need and then reused."""
        if self.compressor is not None:
            return self.compressor
        if self._specpc is None:
            with _BUILD_LOCK:
                if self._specpc is None:
                    self._specpc = SpecPC(
                        self.draft,
                        device=self.device,
                        dtype=self.dtype,
                        progress=self.progress,
                        **self.settings,
                    )
        return self._specpc

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
        node.set_content(compressed.text)
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


def _text_positions(nodes: object) -> list[int]:
    """Positions of the nodes SpecPC compresses: text nodes, not images."""
    if not isinstance(nodes, list):
        raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}")
    positions = []
    for position, item in enumerate(nodes):
        if not isinstance(item, NodeWithScore):
            raise TypeError(f"nodes[{position}] must be a NodeWithScore, got {type(item).__name__}")
        node = item.node
        if (
            isinstance(node, TextNode)
            and not isinstance(node, ImageNode)
            and isinstance(node.text, str)
        ):
            positions.append(position)
    return positions
