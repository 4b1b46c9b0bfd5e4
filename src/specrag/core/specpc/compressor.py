"""SpecPC: keep the parts of retrieved documents a small draft model attends to.

Pipeline of one :meth:`SpecPC.compress` call::

    documents + question
      -> draft tokens per document, grouped into word units   (segmentation)
      -> one or more draft passes, each ending with the question   (_layout_pieces)
      -> attention of the question's last tokens (+ lookahead tokens) on every document token
                                                                  (attention.AttentionCapture)
      -> ranking keys: smoothing, widening, fusion, snapping      (ranking)
      -> units ranked, budget filled; character spans joined verbatim  (selection)

The target model never appears here: the output is text, so any LLM, local or served, with
any tokenizer, can consume it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedTokenizerBase

from ..attention import AttentionCapture, StopForward, capture_attention, enable_capture
from ..budget import resolve_budget, resolve_call_budget
from ..embeddings import Embedder, SentenceVectors, VectorMemo, resolve_embedder
from ..models import LoadedModel, cache_argument, last_logits_only, load_model
from ..segmentation import DocumentTokens, tokenize_document
from ..sentences import index_in_spans, sentence_spans
from ..validation import validate_documents, validate_text
from .batching import CompressRequest, as_request, micro_batches, pad_left
from .costs import TokenCounter, resolve_costs
from .prefix_cache import PrefixCache
from .ranking import RankingContext, TokenKeys, build_steps, rank_tokens
from .result import CompressionResult
from .selection import build_document, select_units
from .settings import SpecPCSettings

DEFAULT_DRAFT = "smollm2-135m"
_FALLBACK_MAX_TOKENS = 8192  # when a config states no position limit
_BRIDGE_FOLLOW = 2  # sentences after the round-1 best one that join the bridge
_BRIDGE_SOURCES = ("fused", "relevance")  # which round-1 "best" sentences are bridged
_PASS_SETTINGS = (
    "window",
    "draft_layers",
    "lookahead",
    "max_draft_tokens",
    "max_unit_tokens",
    "question_template",
    "document_separator",
    "context_header",
    "chat",
    "chat_system",
)
"""Settings that change the draft pass itself; the others only change how its scores rank."""


@dataclass(frozen=True)
class ScoredContext:
    """Draft scores of one (documents, question) pair, from :meth:`SpecPC.score`.

    Selection under a budget is cheap next to the draft pass, so keeping the scores lets a
    caller try several budgets (or fit a text-length limit) with one pass of the draft.
    """

    documents: tuple[str, ...]
    question: str
    instruction: str | None
    tokenized: tuple[DocumentTokens | None, ...]
    scores: tuple[np.ndarray, ...]  # raw per-token scores, one array per document
    pieces: int
    seconds: float
    relevance: tuple[np.ndarray, ...] | None = None
    """Per token, the cosine of its sentence to the question (only with an embedder)."""
    bridge: str | None = None
    """With the bridge round: the round-1 sentences added to the question for round 2, one
    bridge per line (two when the fused and the relevance-only best sentences differ)."""
    bridge_relevance: tuple[np.ndarray, ...] | None = None
    """Per token, the cosine of its sentence to the bridge plus the question."""
    draft_pass: tuple[Any, ...] = ()
    """The draft and every setting the pass depended on: what ``reuse=`` checks."""

    @property
    def total_tokens(self) -> int:
        """Draft tokens of all non-blank documents (a keep_ratio is a fraction of these, or of
        the target's tokens with ``target_tokenizer``)."""
        return sum(doc.num_tokens for doc in self.tokenized if doc is not None)


@dataclass
class _Piece:
    """One draft pass: token ids plus where each scored document token sits in them."""

    ids: list[int]
    flat_positions: np.ndarray  # indices into the flattened document-token array
    piece_positions: np.ndarray  # matching positions inside ``ids``
    question_tokens: int  # length of the question suffix that ends ``ids``


@dataclass(frozen=True)
class _Plan:
    """One request of a batch, validated and laid out, waiting for its draft scores."""

    docs: list[str]
    question: str
    instruction: str | None
    tokenized: list[DocumentTokens | None]
    costs: list[np.ndarray | None]
    budget: int
    total: int
    pieces: list[_Piece]


_ONE_BY_ONE = 1 << 62
"""``max_batch_tokens`` of single-request calls: batch size 1, so no token cap applies."""


class SpecPC:
    """Prompt compression with draft-model attention (SpecPC), for RAG contexts.

    Parameters
    ----------
    draft:
        A :class:`~specrag.models.LoadedModel`, or anything :func:`specrag.load_model` takes
        (bundle name such as ``"smollm2-135m"``, local folder, hub id).
    keep_ratio, max_tokens:
        The budget, shared by all documents of a call: a fraction of their tokens, or an
        absolute number of tokens (draft tokens, or the target's with ``target_tokenizer``).
        At most one; neither means ``keep_ratio=0.25``. Question and instruction are never
        cut and do not count against it.
    device, dtype:
        Where and how to load ``draft`` when it is given by name.
    progress:
        Show a progress bar when an input needs several draft passes.
    embedder:
        Sentence relevance fused with the draft's attention (see
        :mod:`specrag.core.embeddings`): ``"minilm"`` (default: the offline all-MiniLM-L6-v2,
        checked by sha256; :class:`~specrag.core.embeddings.EmbeddingsUnavailableError` if its
        package is missing), a sentence-transformers model, or a callable mapping texts to
        unit vectors. ``None``: draft attention alone (no fusion, no bridge round), the 0.1
        ranking; with ``snap="word"`` as well it reproduces 0.1's output.
    target_tokenizer:
        Count the budget and every reported token figure in the answering model's tokens
        (:mod:`specrag.core.specpc.costs`): a fast Hugging Face tokenizer, a name
        :func:`specrag.load_tokenizer` takes (bundle, folder, hub id), or a function
        ``str -> int`` (e.g. tiktoken's ``lambda text: len(enc.encode(text))``). ``None``:
        the draft's tokens, right when the target shares the draft's tokenizer.
    **settings:
        Fields of :class:`SpecPCSettings` (window, lookahead, start_layer, pool_kernel,
        neighbourhood, separator, max_draft_tokens, ...).

    Examples
    --------
    >>> from specrag import SpecPC, build_tiny_model
    >>> pc = SpecPC(build_tiny_model(), keep_ratio=0.5)
    >>> result = pc.compress(["Paris is the capital of France. It is big."], "Capital of France?")
    >>> result.documents[0].kept_tokens <= result.budget
    True
    """

    def __init__(
        self,
        draft: LoadedModel | str = DEFAULT_DRAFT,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        progress: bool = True,
        embedder: Embedder | str | Any | None = "minilm",
        target_tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | TokenCounter | None = None,
        **settings: object,
    ) -> None:
        # Validated before a model is loaded; neither given means keep_ratio=0.25.
        keep_ratio, max_tokens = resolve_call_budget(keep_ratio, max_tokens)
        self.keep_ratio = keep_ratio
        self.max_tokens = max_tokens
        self.settings = SpecPCSettings(**settings)  # type: ignore[arg-type]
        self.draft = draft if isinstance(draft, LoadedModel) else load_model(draft, device, dtype)
        self.progress = progress
        self.embedder = resolve_embedder(embedder)
        self.costs = resolve_costs(target_tokenizer)
        if self.settings.bridge is True and self.embedder is None:
            raise ValueError(
                "bridge=True ranks sentences by relevance to the bridge: give an embedder ('minilm' or your own)"
            )
        if self.settings.chat and not getattr(self.draft.tokenizer, "chat_template", None):
            raise ValueError(f"chat=True, but the tokenizer of draft {self.draft.name!r} has no chat template")
        self._start_layer = self._resolve_start_layer()
        self.prefix_cache = PrefixCache(self.settings.prefix_cache_mb * 2**20)
        """Draft KV caches of recent prompts (:mod:`~.prefix_cache`): ``len()``, ``size``,
        ``hits``, ``reused_tokens``, ``clear()``."""
        self._vector_memo = VectorMemo() if self.settings.prefix_cache_mb else None
        enable_capture(self.draft.model)
        self._bos = self._leading_special_ids()

    # ------------------------------------------------------------------ public API
    def compress(
        self,
        documents: Sequence[str],
        question: str,
        instruction: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
    ) -> CompressionResult:
        """Compress ``documents`` for ``question`` under one shared token budget.

        Returns one :class:`CompressedDocument` per input, same order; a document the draft
        finds irrelevant may come back empty. Per-call ``keep_ratio``/``max_tokens`` override
        the instance's budget.
        """
        started = time.perf_counter()
        ratio, absolute = self._call_budget(keep_ratio, max_tokens)
        plan = self._plan(documents, question, instruction, ratio, absolute)
        (scored,) = self._run([plan], 1, _ONE_BY_ONE, started)
        return self._result(scored, plan.budget, plan.costs)

    def score(
        self,
        documents: Sequence[str],
        question: str,
        instruction: str | None = None,
        *,
        reuse: ScoredContext | None = None,
    ) -> ScoredContext:
        """Run the draft once and keep its token scores, to select under several budgets.

        ``pc.select(pc.score(docs, q), keep_ratio=r)`` equals ``pc.compress(docs, q,
        keep_ratio=r)`` for every ``r``, but the draft (the expensive part) runs only once.

        ``reuse``: the result of another SpecPC's ``score`` on the same inputs, with the same
        draft and draft-pass settings (window, lookahead, start layer, templates, ...) but
        other ranking settings (snap, fusion, an embedder, bridge). Its draft scores are taken
        as they are, and only sentence relevance is computed anew, so comparing ranking
        settings costs one draft pass. ``ValueError`` if the inputs or the pass differ.
        """
        started = time.perf_counter()
        plan = self._plan(documents, question, instruction, None, None, budgeted=False)
        if reuse is None:
            return self._run([plan], 1, _ONE_BY_ONE, started)[0]
        self._check_reuse(reuse, plan.docs, plan.question, plan.instruction)
        return self._scored(plan, (list(reuse.scores), reuse.pieces), started)

    def _check_reuse(self, reuse: ScoredContext, docs: list[str], question: str, instruction: str | None) -> None:
        if (reuse.documents, reuse.question, reuse.instruction) != (tuple(docs), question, instruction):
            raise ValueError("reuse= holds the scores of other documents, question or instruction")
        if reuse.draft_pass != self.draft_pass:
            raise ValueError(
                "reuse= was scored with another draft or other draft-pass settings "
                f"({', '.join(_PASS_SETTINGS)}, start_layer); score anew instead"
            )

    def _run(
        self, plans: Sequence[_Plan], batch_size: int, max_batch_tokens: int, started: float
    ) -> list[ScoredContext]:
        """Every plan's draft pass (all their pieces, micro-batched by ``batch_size``), then
        each one's relevance and bridge round (:meth:`_scored`)."""
        scores = self._score_pieces([piece for plan in plans for piece in plan.pieces], batch_size, max_batch_tokens)
        scored, first = [], 0  # scores come back in the order of the pieces: each plan's are a run
        for plan in plans:
            mine, first = scores[first : first + len(plan.pieces)], first + len(plan.pieces)
            doc_scores = _assemble(plan.tokenized, plan.total, plan.pieces, mine)
            scored.append(self._scored(plan, (doc_scores, len(plan.pieces)), started))
        return scored

    def _scored(self, plan: _Plan, draft_scores: tuple[list[np.ndarray], int], started: float) -> ScoredContext:
        """A plan's draft scores (per document, and the passes they took), with sentence
        relevance (with an embedder) and the bridge round (with ``bridge``); the embedder is
        not called when the budget is 0."""
        docs, question, instruction, tokenized = plan.docs, plan.question, plan.instruction, plan.tokenized
        doc_scores, pieces = draft_scores
        vectors = (
            SentenceVectors(self.embedder, question, docs, self._vector_memo)
            if self.embedder is not None and plan.budget
            else None
        )
        starts = [doc.token_anchors if doc is not None else np.zeros(0, dtype=np.int64) for doc in tokenized]
        scored = ScoredContext(
            documents=tuple(docs),
            question=question,
            instruction=instruction,
            tokenized=tuple(tokenized),
            scores=tuple(doc_scores),
            pieces=pieces,
            seconds=0.0,
            relevance=tuple(vectors.relevance(vectors.question_vector, starts)) if vectors is not None else None,
            draft_pass=self.draft_pass,
        )
        if self.settings.bridge is not False and vectors is not None:
            scored = self._with_bridge(scored, vectors, starts)
        return dataclasses.replace(scored, seconds=time.perf_counter() - started)

    def _with_bridge(self, scored: ScoredContext, vectors: SentenceVectors, starts: list[np.ndarray]) -> ScoredContext:
        """Round 2 of multi-fact coverage: relevance to the question plus a bridge.

        A bridge is a round-1 best sentence and the two sentences after it in its document,
        where a fact about the subject usually follows its name. Two picks of "best" are
        bridged, because each alone is sometimes a distractor: the best by attention fused
        with relevance as a weighted sum (where both signals agree), and the best by
        relevance alone (the sentence most like the question). A token's bridge relevance is
        the better of its sentence's cosine to either bridge plus the question. The sentences
        were embedded in round 1: this round embeds only the one or two bridge queries.
        """
        assert scored.relevance is not None
        keys = self._keys(scored, self.settings.model_copy(update={"fusion": "sum", "bridge": False}))
        fused = [key[0] if key is not None else None for key in keys]
        picks = []
        for source in _BRIDGE_SOURCES:
            chosen = _best_token(fused if source == "fused" else list(scored.relevance), scored.tokenized)
            if chosen is not None:
                picks.append(chosen)
        bridges: list[str] = []
        for document, token in picks:
            doc = scored.tokenized[document]
            assert doc is not None
            text = scored.documents[document]
            spans = sentence_spans(text)
            first = int(index_in_spans(spans, doc.token_anchors[[token]])[0])
            bridge = " ".join(text[a:b].strip() for a, b in spans[first : first + 1 + _BRIDGE_FOLLOW])
            if bridge not in bridges:
                bridges.append(bridge)
        if not bridges:
            return scored
        queries = vectors.embed_queries([f"{bridge} {scored.question}" for bridge in bridges])
        rounds = [vectors.relevance(query, starts) for query in queries]
        best = [np.maximum.reduce([r[index] for r in rounds]) for index in range(len(scored.documents))]
        return dataclasses.replace(scored, bridge="\n".join(bridges), bridge_relevance=tuple(best))

    def select(
        self,
        scored: ScoredContext,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
    ) -> CompressionResult:
        """Keep the best spans of an already scored context under a budget (no draft pass).

        Without ``keep_ratio``/``max_tokens`` the instance's budget applies. ``seconds`` in
        the result counts the scoring pass plus this selection.
        """
        ratio, absolute = self._call_budget(keep_ratio, max_tokens)
        costs = self._unit_costs(list(scored.tokenized))
        return self._result(scored, resolve_budget(_total(costs), ratio, absolute), costs)

    def _prepare(
        self, documents: Sequence[str], question: str, instruction: str | None
    ) -> tuple[list[str], str, str | None, list[DocumentTokens | None]]:
        """Validate the inputs and split each non-blank document into word units."""
        docs = validate_documents(documents)
        question = validate_text("question", question, allow_empty=False)
        if instruction is not None:
            instruction = validate_text("instruction", instruction, allow_empty=True)
        tokenized = [
            tokenize_document(self.draft.tokenizer, text, self.settings.max_unit_tokens) if text.strip() else None
            for text in docs
        ]
        return docs, question, instruction, tokenized

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the budget counts them: the draft's, or the target's with
        ``target_tokenizer`` (what callers that fit other text around the context use)."""
        return self.costs.count(text, self.draft.tokenizer)

    def _unit_costs(self, tokenized: Sequence[DocumentTokens | None]) -> list[np.ndarray | None]:
        """Each non-blank document's unit costs in the budget's tokens (:attr:`costs`)."""
        return [None if doc is None else self.costs.of(doc) for doc in tokenized]

    def _result(self, scored: ScoredContext, budget: int, costs: list[np.ndarray | None]) -> CompressionResult:
        started = time.perf_counter()
        tokenized, doc_scores = list(scored.tokenized), list(scored.scores)
        group_tokens = self.settings.max_sentence_tokens if self.settings.snap == "sentence" else None
        selection = select_units(tokenized, self.token_keys(scored), budget, group_tokens, costs)
        compressed = [
            build_document(
                index,
                scored.documents[index],
                tokenized[index],
                doc_scores[index],
                selection.units.get(index, np.zeros(0, dtype=np.int64)),
                self.settings.separator,
                costs[index],
            )
            for index in range(len(scored.documents))
        ]
        return CompressionResult(
            documents=compressed,
            question=scored.question,
            instruction=scored.instruction,
            budget=budget,
            separator=self.settings.separator,
            draft=self.draft.name,
            counted_in=self.costs.counted_in,
            pieces=scored.pieces,
            seconds=scored.seconds + time.perf_counter() - started,
        )

    async def acompress(
        self,
        documents: Sequence[str],
        question: str,
        instruction: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
    ) -> CompressionResult:
        """:meth:`compress` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(
            self.compress,
            documents,
            question,
            instruction,
            keep_ratio=keep_ratio,
            max_tokens=max_tokens,
        )

    def compress_batch(
        self,
        requests: Sequence[CompressRequest | Mapping[str, Any]],
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int = 32_768,
    ) -> list[CompressionResult]:
        """Compress many requests, their draft passes run as padded micro-batches.

        Each request is a :class:`~specrag.core.specpc.batching.CompressRequest` or a dict
        with ``documents``, ``question`` and optionally ``instruction``; results come back in
        order and equal :meth:`compress` of each request (up to floating-point summation
        order in the draft). ``batch_size`` prompts of at most ``max_batch_tokens`` padded
        tokens go through the draft together (see :mod:`~specrag.core.specpc.batching`);
        with ``lookahead > 1`` prompts run one by one. ``batch_size=None``: 8 on an
        accelerator, 1 on a CPU, where a padded batch was slower than one prompt at a time
        (0.78x the requests/s at 8, docs/benchmarks.md). Every result's ``seconds`` is the
        wall-clock time of the whole batch. A bad request raises before any draft pass, and
        its error names its position.
        """
        started = time.perf_counter()
        ratio, absolute = self._call_budget(keep_ratio, max_tokens)
        plans = [
            self._batch_plan(as_request(request, position), position, ratio, absolute)
            for position, request in enumerate(requests)
        ]
        if batch_size is None:
            batch_size = 1 if self.draft.device.type == "cpu" else 8
        scored = self._run(plans, batch_size, max_batch_tokens, started)
        results = [self._result(one, plan.budget, plan.costs) for one, plan in zip(scored, plans, strict=True)]
        seconds = time.perf_counter() - started
        return [result.model_copy(update={"seconds": seconds}) for result in results]

    async def acompress_batch(
        self,
        requests: Sequence[CompressRequest | Mapping[str, Any]],
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int = 32_768,
    ) -> list[CompressionResult]:
        """:meth:`compress_batch` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(
            self.compress_batch,
            requests,
            keep_ratio=keep_ratio,
            max_tokens=max_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    def _plan(
        self,
        documents: Sequence[str],
        question: str,
        instruction: str | None,
        ratio: float | None,
        absolute: int | None,
        *,
        budgeted: bool = True,
    ) -> _Plan:
        """Validate one request and lay out its draft prompts: everything before the draft
        pass, shared by :meth:`compress`, :meth:`score` and :meth:`compress_batch`.

        ``budgeted=False`` (:meth:`score`, which selects later under any budget): no unit
        costs in the budget's tokens, and every document is laid out.
        """
        docs, question, instruction, tokenized = self._prepare(documents, question, instruction)
        total = sum(t.num_tokens for t in tokenized if t is not None)
        costs: list[np.ndarray | None] = self._unit_costs(tokenized) if budgeted else [None] * len(tokenized)
        budget = resolve_budget(_total(costs), ratio, absolute) if budgeted else total
        pieces = self._layout_pieces(tokenized, question, instruction) if budget else []  # budget 0: no pass
        return _Plan(docs, question, instruction, tokenized, costs, budget, total, pieces)

    def _batch_plan(self, request: CompressRequest, position: int, ratio: float | None, absolute: int | None) -> _Plan:
        """:meth:`_plan` of one request of a batch; its errors name its position."""
        try:
            return self._plan(request.documents, request.question, request.instruction, ratio, absolute)
        except (TypeError, ValueError) as error:
            raise type(error)(f"request {position}: {error}") from None

    def _score_pieces(self, pieces: Sequence[_Piece], batch_size: int, max_batch_tokens: int) -> list[np.ndarray]:
        """Every piece's scores, as padded micro-batches (one by one with lookahead > 1)."""
        groups = list(micro_batches([len(piece.ids) for piece in pieces], batch_size, max_batch_tokens))
        scores: list[np.ndarray | None] = [None] * len(pieces)
        unit = "pass" if batch_size == 1 else "batch"
        bar = tqdm(groups, desc="specpc", unit=unit, disable=None if (self.progress and len(groups) > 1) else True)
        for group in bar:
            if self.settings.lookahead > 1 or len(group) == 1:
                for index in group:
                    scores[index] = self._score_piece(pieces[index].ids, pieces[index].question_tokens)
                continue
            batch = self._score_padded([pieces[index] for index in group])
            for index, piece_scores in zip(group, batch, strict=True):
                scores[index] = piece_scores
        return [score for score in scores if score is not None]

    @torch.inference_mode()
    def _score_padded(self, pieces: Sequence[_Piece]) -> list[np.ndarray]:
        """One draft forward over left-padded pieces (prefill only); each row's scores."""
        tokenizer = self.draft.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        input_ids, mask = pad_left([piece.ids for piece in pieces], int(pad_id or 0), self.draft.device)
        width = input_ids.shape[1]
        capture = AttentionCapture(
            num_keys=width,
            window=self.settings.window,
            start_layer=self._start_layer,
            end_layer=self.settings.draft_layers,
            row_windows=[min(self.settings.window, piece.question_tokens) for piece in pieces],
            key_mask=mask.bool(),
        )
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        with capture_attention(capture), suppress(StopForward):
            self.draft.model(
                input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
                logits_to_keep=last_logits_only(input_ids.shape[1], input_ids.device),
            )
        rows = capture.result().float().cpu().numpy()
        return [self._checked(rows[row, width - len(piece.ids) :]) for row, piece in enumerate(pieces)]

    # ------------------------------------------------------------------ scoring
    def _layout_pieces(
        self, tokenized: list[DocumentTokens | None], question: str, instruction: str | None
    ) -> list[_Piece]:
        """Lay documents out as draft prompts no longer than the draft can read.

        Each piece is ``[bos] instruction documents... question``; documents that do not fit
        continue in the next piece, which again ends with the question, so every token is
        scored by the question's attention.
        """
        tokenizer = self.draft.tokenizer
        settings = self.settings
        head_text, tail_text = self._frame(question, instruction)
        prefix = tokenizer.encode(head_text, add_special_tokens=False)
        if not settings.chat:  # a chat template writes its own BOS
            prefix = list(self._bos) + prefix
        suffix = tokenizer.encode(tail_text, add_special_tokens=False)
        separator = tokenizer.encode(settings.document_separator, add_special_tokens=False)
        limit = self._max_draft_tokens()
        room = limit - len(prefix) - len(suffix) - (settings.lookahead - 1)
        if room < 64:
            raise ValueError(
                f"question and instruction take {len(prefix) + len(suffix)} draft tokens, leaving "
                f"{room} of the draft's {limit} for documents; shorten them or raise max_draft_tokens"
            )
        pieces: list[_Piece] = []
        ids: list[int] = list(prefix)
        flat_pos: list[np.ndarray] = []
        piece_pos: list[np.ndarray] = []
        flat_offset = 0

        def close() -> None:
            nonlocal ids, flat_pos, piece_pos
            if flat_pos:
                pieces.append(_Piece(ids + suffix, np.concatenate(flat_pos), np.concatenate(piece_pos), len(suffix)))
            ids, flat_pos, piece_pos = list(prefix), [], []

        for doc in tokenized:
            if doc is None:
                continue
            start = 0
            while start < doc.num_tokens:
                free = room - (len(ids) - len(prefix))
                if free <= len(separator):
                    close()
                    continue
                take = min(doc.num_tokens - start, free - len(separator))
                piece_pos.append(np.arange(len(ids), len(ids) + take))
                flat_pos.append(np.arange(flat_offset + start, flat_offset + start + take))
                ids.extend(doc.ids[start : start + take].tolist())
                ids.extend(separator)
                start += take
            flat_offset += doc.num_tokens
        close()
        return pieces

    def _frame(self, question: str, instruction: str | None) -> tuple[str, str]:
        """Text before the documents and text after them (the question) in a draft prompt.

        With ``chat``, the draft's chat template frames the prompt (documents and question in
        the user turn, the instruction or ``chat_system`` as system message, generation
        prompt open), found by rendering the template around a marker and splitting there.
        """
        settings = self.settings
        question_text = settings.question_template.format(question=question)
        if not settings.chat:
            head = f"{instruction}{settings.document_separator}" if instruction else ""
            return head + (settings.context_header or settings.document_separator), question_text
        marker = "\x00specrag-documents\x00"
        messages = [
            {"role": "system", "content": instruction or settings.chat_system},
            {"role": "user", "content": f"{settings.context_header}{marker}{question_text}"},
        ]
        rendered = self.draft.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str) or rendered.count(marker) != 1:
            raise ValueError(f"the chat template of draft {self.draft.name!r} did not keep the user message intact")
        head, tail = rendered.split(marker)
        return head, tail

    @torch.inference_mode()
    def _score_piece(self, ids: list[int], question_tokens: int) -> np.ndarray:
        """Run the draft over one piece; return each position's fp32 importance.

        The longest prefix of ``ids`` the draft read in an earlier piece comes from the prefix
        cache (:mod:`~.prefix_cache`), so only the tokens after it are forwarded; the window
        queries are always among them. The piece's cache is kept for the next call.
        """
        model = self.draft.model
        window = min(self.settings.window, question_tokens)
        token_ids = np.asarray(ids, dtype=np.int64)
        reused, cache = self.prefix_cache.lookup(token_ids, limit=len(ids) - window)
        lookahead = self.settings.lookahead
        if cache is None and (lookahead > 1 or self.prefix_cache.max_bytes > 0):
            cache = DynamicCache(config=model.config)
        input_ids = torch.tensor([ids[reused:]], dtype=torch.long, device=self.draft.device)
        capture = AttentionCapture(
            num_keys=len(ids),
            window=window,
            start_layer=self._start_layer,
            end_layer=self.settings.draft_layers,
        )
        with capture_attention(capture), suppress(StopForward):
            output = model(
                input_ids,
                use_cache=cache is not None,
                logits_to_keep=last_logits_only(input_ids.shape[1], input_ids.device),
                **cache_argument(model, cache),
            )
            eos = self.draft.tokenizer.eos_token_id
            for _ in range(lookahead - 1):
                next_token = output.logits[:, -1].argmax(dim=-1, keepdim=True)
                if eos is not None and int(next_token) == eos:
                    break
                output = model(next_token, use_cache=True, logits_to_keep=1, **cache_argument(model, cache))
        scores = self._checked(capture.result()[0].float().cpu().numpy())
        if cache is not None and self.prefix_cache.max_bytes > 0 and cache.is_croppable:
            held = cache.get_seq_length()
            if held > len(ids):  # the lookahead tokens are the draft's answer, not the prompt
                cache.crop(len(ids) - held)
            if cache.get_seq_length() == len(ids):
                self.prefix_cache.store(token_ids, cache)
        return scores

    def _checked(self, scores: np.ndarray) -> np.ndarray:
        """``scores``, refused if not finite: NaN ranks arbitrarily, a wrong context."""
        if not np.isfinite(scores).all():
            name = self.draft.name
            raise RuntimeError(
                f"draft {name!r} gave NaN/inf attention scores, so its model file is likely corrupted; "
                f"fetch it again: specrag models pull {name} --force"
            )
        return scores

    # ------------------------------------------------------------------ selection
    def token_keys(self, scored: ScoredContext) -> list[TokenKeys | None]:
        """Per document, the per-token ranking keys selection uses, most significant first
        (``None`` for a blank document).

        Keys: the output of the ranking pipeline (:mod:`specrag.core.specpc.ranking`:
        smoothing, widening, fusion with sentence relevance when an embedder is set,
        sentence snapping with ``snap="sentence"``), the smoothed attention, the raw
        attention. Exposed so that a caller who counts its budget in another tokenizer (the
        benchmark counts in the target's) ranks exactly as SpecPC does.
        """
        return self._keys(scored, self.settings)

    def _keys(self, scored: ScoredContext, settings: SpecPCSettings) -> list[TokenKeys | None]:
        present = [index for index, doc in enumerate(scored.tokenized) if doc is not None and doc.num_tokens > 0]

        def of_present(values: tuple[np.ndarray, ...] | None) -> list[np.ndarray] | None:
            return None if values is None else [values[index] for index in present]

        context = RankingContext(
            documents=[scored.documents[index] for index in present],
            tokens=[scored.tokenized[index] for index in present],  # type: ignore[misc]
            relevance=of_present(scored.relevance),
            bridge_relevance=of_present(scored.bridge_relevance) if settings.bridge is not False else None,
        )
        steps = build_steps(settings, fused=scored.relevance is not None)
        ranked = rank_tokens([scored.scores[index] for index in present], steps, context)
        keys: list[TokenKeys | None] = [None] * len(scored.tokenized)
        for index, token_keys in zip(present, ranked, strict=True):
            keys[index] = token_keys
        return keys

    # ------------------------------------------------------------------ helpers
    def _call_budget(self, keep_ratio: float | None, max_tokens: int | None) -> tuple[float | None, int | None]:
        return resolve_call_budget(keep_ratio, max_tokens, default=(self.keep_ratio, self.max_tokens))

    def _resolve_start_layer(self) -> int:
        layers = self.draft.num_layers
        start = self.settings.start_layer
        end = self.settings.draft_layers
        if end is not None and end > layers:
            raise ValueError(f"draft_layers={end} but the draft has only {layers} layers")
        if start is None:
            start = layers // 3
        elif start >= layers:
            raise ValueError(f"start_layer={start} but the draft has only {layers} layers")
        if end is not None and start >= end:
            raise ValueError(f"start_layer={start} must be below draft_layers={end}: no layer would be scored")
        return start

    @property
    def draft_pass(self) -> tuple[Any, ...]:
        """The draft and the settings its pass depends on: two instances with equal values
        produce equal draft scores, so one may ``score(..., reuse=)`` the other's result."""
        return (
            self.draft.name,
            id(self.draft.model),
            self._start_layer,
            *(getattr(self.settings, f) for f in _PASS_SETTINGS),
        )

    def _max_draft_tokens(self) -> int:
        if self.settings.max_draft_tokens is not None:
            return self.settings.max_draft_tokens
        return self.draft.max_positions or _FALLBACK_MAX_TOKENS

    def _leading_special_ids(self) -> list[int]:
        """The special tokens the tokenizer puts before text (e.g. BOS), if it adds any."""
        tokenizer = self.draft.tokenizer
        with_special = tokenizer.encode("a", add_special_tokens=True)
        without = tokenizer.encode("a", add_special_tokens=False)
        if with_special[-len(without) :] == without:
            return with_special[: len(with_special) - len(without)]
        return []

    def __repr__(self) -> str:
        budget = f"keep_ratio={self.keep_ratio}" if self.keep_ratio is not None else f"max_tokens={self.max_tokens}"
        return f"SpecPC(draft={self.draft.name!r}, {budget}, start_layer={self._start_layer}, {self.settings!r})"


def _total(costs: Sequence[np.ndarray | None]) -> int:
    """All documents' tokens in the budget's count: what a keep_ratio is a fraction of."""
    return sum(int(c.sum()) for c in costs if c is not None)


def _best_token(
    values: Sequence[np.ndarray | None], tokenized: Sequence[DocumentTokens | None]
) -> tuple[int, int] | None:
    """(document, token) of the highest value over all non-blank documents; the first on ties."""
    best: tuple[int, int] | None = None
    top = -np.inf
    for index, (doc_values, doc) in enumerate(zip(values, tokenized, strict=True)):
        if doc is None or doc_values is None or not doc_values.size:
            continue
        token = int(np.argmax(doc_values))
        if float(doc_values[token]) > top:
            best, top = (index, token), float(doc_values[token])
    return best


def _assemble(
    tokenized: list[DocumentTokens | None], total: int, pieces: Sequence[_Piece], scores: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per-document token scores from each piece's scores over its prompt positions."""
    flat = np.zeros(total, dtype=np.float32)
    for piece, piece_scores in zip(pieces, scores, strict=True):
        flat[piece.flat_positions] = piece_scores[piece.piece_positions]
    return _split_flat(flat, tokenized)


def _split_flat(flat: np.ndarray, tokenized: list[DocumentTokens | None]) -> list[np.ndarray]:
    out, offset = [], 0
    for doc in tokenized:
        count = doc.num_tokens if doc is not None else 0
        out.append(flat[offset : offset + count])
        offset += count
    return out
