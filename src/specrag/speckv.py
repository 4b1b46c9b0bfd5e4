"""SpecKV: generate with a KV cache kept to a budget, chosen by a draft model's answer.

One :meth:`SpecKV.generate` call::

    prompt | messages (+ documents, SpecPC-compressed when a compressor is set)
      -> target token ids (chat template when the tokenizer has one)
      -> draft writes an approximate answer (greedy, ``lookahead`` tokens)   [only if the
         prompt is longer than the budget]
      -> target prefills the prompt, then the draft answer on top of it, while
         kv_scoring.DraftGuidedScores folds the attention of the last ``window`` prompt
         queries and of every draft-answer query, per layer and KV head
      -> draft-answer entries rolled back; each budgeted layer keeps, per KV head, the
         last ``window`` prompt entries plus the best-scored (budget - window) others
      -> own decode loop: greedy or sampled, stop strings, EOS, streaming; positions
         continue the original prompt length while the cache is shorter
      -> optional re-scoring every ``rescore_every`` tokens keeps the cache in budget

The prompt's first answer token comes from the target's own logits over the *full*
prompt (eviction happens after that forward), as in the paper.

``policy="streaming"`` swaps the scoring for StreamingLLM's position rule (Xiao et al.
2023): no draft runs and no attention is scored; each budgeted layer keeps the first
``sink_tokens`` prompt entries plus the most recent ones, through the same gather
(``BudgetedCache.keep``), positions and decode loop. It exists as a baseline: it costs
nothing to choose, but it forgets the middle of the prompt, where RAG answers usually are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import (
    Generator,
    Sequence,
)
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from transformers import DynamicCache, PreTrainedTokenizerBase

from .attention import capture_attention, enable_capture
from .budget_cache import BudgetedCache, plan_layers
from .decoding import (
    AsyncTextStream,
    IncrementalText,
    Message,
    Prompt,
    Sampling,
    StopText,
    TextStream,
    make_generator,
    next_token,
    render_prompt,
    validate_prompt,
)
from .kv_scoring import (
    DraftGuidedScores,
    FanOut,
    RecentQueries,
    keep_indices,
    pool_scores,
    sink_and_recent_indices,
)
from .models import LoadedModel, load_model
from .result import CompressionResult
from .specpc import SpecPC

FinishReason = Literal["eos", "stop", "length"]
Policy = Literal["attention", "streaming"]


class SpecKVSettings(BaseModel):
    """Knobs of SpecKV. Unknown names are rejected so a typo cannot fall back silently.

    Defaults are the reference configuration (window 32, kernel 7, max reduction), except
    the lookahead, which the reference sets to the whole answer length: here it is capped by
    ``max_lookahead`` because the draft's generation is SpecKV's main cost and its first
    tokens carry most of the signal (see ``docs/speckv.md``).

    ``policy`` chooses *how* entries are picked. ``"attention"`` (SpecKV, or SnapKV-style
    without a draft) scores them. ``"streaming"`` (StreamingLLM) keeps, per budgeted layer,
    the first ``sink_tokens`` prompt entries and the most recent ``budget - sink_tokens``
    (``budget - rescore_every - sink_tokens`` with re-scoring, which then becomes a rolling
    cut instead of a re-score). It reads no attention, so the scoring knobs (``window`` for
    scoring, ``pool_kernel``, ``reduction``, ``query_chunk``) have no effect there and a
    draft is refused; the budget rules are unchanged (``budget >= window`` still holds) so
    both policies are compared at identical budgets. ``sink_tokens`` is ignored by
    ``"attention"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Policy = Field(
        "attention",
        description="'attention': keep the entries the window / draft answer attend to most; "
        "'streaming': keep the first sink_tokens entries plus the most recent ones "
        "(StreamingLLM), no draft, no scoring.",
    )
    sink_tokens: int = Field(
        4,
        ge=0,
        description="With policy='streaming': leading prompt entries always kept (attention "
        "sinks; StreamingLLM uses 4). Must be smaller than the entries kept after eviction.",
    )

    window: int = Field(
        32, ge=1, description="Last prompt tokens whose queries score, always kept."
    )
    pool_kernel: int = Field(7, ge=1, description="Centred max-pool width smoothing scores.")
    lookahead: int | None = Field(
        None,
        ge=0,
        description="Draft answer tokens whose queries score; None = min(max_new_tokens, "
        "max_lookahead); 0 = no draft (window-only, SnapKV-style eviction).",
    )
    max_lookahead: int = Field(64, ge=1, description="Cap on the automatic lookahead.")
    reduction: Literal["max", "mean"] = Field(
        "max", description="How group heads and queries are reduced to one score per entry."
    )
    rescore_every: int | None = Field(
        None,
        ge=1,
        description="Also evict during decoding: every this many tokens, re-score with the "
        "last `window` tokens' queries so the cache never exceeds the budget. None = evict "
        "once after prefill (the paper's behaviour).",
    )
    query_chunk: int = Field(16, ge=1, description="Queries scored at once (memory bound).")
    document_template: str = Field(
        "Documents:\n\n{context}\n\nQuestion: {question}\nAnswer:",
        description="How documents and question form the user turn when documents are given.",
    )

    @field_validator("document_template")
    @classmethod
    def _has_slots(cls, value: str) -> str:
        for slot in ("{context}", "{question}"):
            if slot not in value:
                raise ValueError(f"document_template must contain {slot!r}")
        return value

    @model_validator(mode="after")
    def _no_lookahead_when_streaming(self) -> SpecKVSettings:
        # A lookahead asks for a draft answer that the streaming policy would never read:
        # refuse it rather than silently generate nothing.
        if self.policy == "streaming" and self.lookahead:
            raise ValueError(
                f"lookahead ({self.lookahead}) has no meaning with policy='streaming', which "
                "runs no draft; leave it unset or 0"
            )
        return self


class SpecKVResult(BaseModel):
    """What one generation produced and what it cost.

    ``token_ids`` are the generated target tokens, including the EOS or the token that
    completed a stop string; ``text`` excludes special tokens and anything from a stop
    string on. Cache figures count entries per layer: one entry is one position's key and
    value for all KV heads of that layer.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    token_ids: list[int]
    finish_reason: FinishReason = Field(description="'eos', 'stop' (a stop string) or 'length'.")
    prompt_tokens: int = Field(description="Target tokens of the prompt (after compression).")
    lookahead_tokens: int = Field(description="Draft-answer tokens (target ids) that scored.")
    budget: int
    evicted: bool = Field(description="Whether the prefill was evicted (prompt > budget).")
    budgeted_layers: list[int] = Field(description="Layers whose cache is kept to the budget.")
    prefill_cache_entries: list[int] = Field(
        description="Entries per layer after prefill eviction."
    )
    cache_entries: list[int] = Field(description="Entries per layer at the end.")
    peak_decode_entries: int = Field(
        description="Most entries any budgeted layer held during a decode step (0 if none ran)."
    )
    rescores: int = Field(description="Evictions during decoding (re-scoring mode).")
    kv_bytes: int = Field(description="Bytes of keys and values held at the end.")
    full_kv_bytes: int = Field(description="Bytes a full (never evicted) cache would hold then.")
    draft_seconds: float
    prefill_seconds: float = Field(description="Target prefill, scoring forward and eviction.")
    decode_seconds: float
    decode_tokens_per_second: float = Field(description="Decode forwards per second.")
    compression: CompressionResult | None = Field(
        None, description="SpecPC's result when documents were compressed first."
    )

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


SpecKVStream = TextStream[SpecKVResult]
"""Text deltas of one generation, then ``.result`` (a :class:`SpecKVResult`)."""

AsyncSpecKVStream = AsyncTextStream[SpecKVResult]
"""The asyncio version: generation runs in a worker thread; ``.result`` at the end."""


class SpecKV:
    """Generation from a target LM whose KV cache is kept to ``budget`` entries per layer.

    Parameters
    ----------
    target
        The model that answers: a :class:`~specrag.LoadedModel` or anything
        :func:`specrag.load_model` takes.
    draft
        The small model whose approximate answer tells which prompt entries matter. It may
        use another tokenizer (its answer then crosses over as text); with the same vocabulary
        token ids cross directly. ``None``: no lookahead, eviction from the prompt's last
        ``window`` queries only (SnapKV-style), or the compressor's draft if one is given.
        Must be ``None`` with ``policy="streaming"``, which reads no draft.
    budget
        Cache entries each budgeted layer keeps after prefill (per KV head). Must be at least
        ``window`` (with either policy), and more than ``sink_tokens`` with
        ``policy="streaming"``.
    compressor
        A :class:`~specrag.SpecPC` for SpecKV-PC: documents passed to :meth:`generate` are
        compressed with it first, then the cache is evicted, with one draft (the
        compressor's; passing a different ``draft`` is an error).
    device, dtype
        Where and how to load models given by name.
    **settings
        :class:`SpecKVSettings` fields (policy, sink_tokens, window, pool_kernel, lookahead,
        max_lookahead, reduction, rescore_every, query_chunk, document_template).
        ``policy="streaming"`` is StreamingLLM eviction (sinks + recent entries, no draft,
        no scoring): a baseline, see :class:`SpecKVSettings`.

    Notes
    -----
    Thread safety: each instance generates one request at a time (a re-entrant lock is
    held for a whole generation, streams included); other threads wait. Attention capture is
    scoped to the generating thread, so several instances sharing a model do not interfere.

    Raises
    ------
    TypeError, ValueError
        For a non-int or too small ``budget``, invalid settings, or a ``draft`` given with
        ``policy="streaming"``.
    UnsupportedModelError
        For models with layers SpecKV cannot serve (see :mod:`specrag.budget_cache`).
    """

    def __init__(
        self,
        target: LoadedModel | str,
        draft: LoadedModel | str | None = None,
        *,
        budget: int,
        compressor: SpecPC | None = None,
        device: str = "auto",
        dtype: str = "auto",
        **settings: Any,
    ) -> None:
        self.settings = SpecKVSettings(**settings)
        self.budget = validate_budget(budget, self.settings)
        if compressor is not None and not isinstance(compressor, SpecPC):
            raise TypeError(f"compressor must be a SpecPC, got {type(compressor).__name__}")
        if draft is not None and self.settings.policy == "streaming":
            # Refused, not ignored: a caller passing a draft expects it to guide eviction,
            # and a silently unused draft would make a streaming row look like SpecKV.
            raise ValueError(
                "policy='streaming' evicts by position and runs no draft, but a draft was "
                "given; pass draft=None (or use policy='attention' for draft-guided eviction)"
            )
        self.compressor = compressor
        self.target = load_model(target, device, dtype)
        plan_layers(self.target.model.config, 1)  # refuse unsupported layer types up front
        if draft is None and compressor is not None:
            self.draft: LoadedModel | None = compressor.draft
        elif draft is None:
            self.draft = None
        else:
            self.draft = load_model(draft, device, dtype)
            if compressor is not None and compressor.draft is not self.draft:
                raise ValueError(
                    "SpecKV-PC uses one draft: the compressor's draft and `draft` differ; pass "
                    "draft=None to use the compressor's"
                )
        enable_capture(self.target.model)
        self._shared_vocab = self.draft is not None and (
            self.draft.tokenizer is self.target.tokenizer
            or self.draft.tokenizer.get_vocab() == self.target.tokenizer.get_vocab()
        )
        self._target_eos = _eos_ids(self.target)
        self._draft_eos = _eos_ids(self.draft) if self.draft is not None else frozenset()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ public API
    def generate(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> SpecKVResult:
        """Generate an answer to ``prompt`` with a budgeted cache.

        Parameters
        ----------
        prompt
            Plain text (a completion prompt, tokenized as is with the tokenizer's special
            tokens) or chat messages (rendered with the tokenizer's chat template; without
            one, as ``"Role: content"`` lines followed by ``"Assistant:"``).
        documents
            Optional context documents. They and the question (the prompt text, or the last
            user message's content) fill ``document_template``, which becomes the prompt
            (or that user message); with a compressor they are SpecPC-compressed first.
        max_new_tokens
            Most tokens to generate (> 0).
        temperature, top_p, top_k
            ``temperature=0`` is greedy; otherwise sampling with top-p / top-k cuts.
        seed
            Seeds this call's private ``torch.Generator`` (the global RNG is never touched).
        stop
            Stop strings; generation ends when the text contains one, and it is cut there.

        Returns
        -------
        SpecKVResult
        """
        stream = self.stream(
            prompt,
            documents=documents,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=stop,
        )
        for _ in stream:
            pass
        return stream.result

    def stream(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> SpecKVStream:
        """Like :meth:`generate`, as an iterator of text deltas (see :class:`SpecKVStream`).

        Arguments are validated now; the work starts on the first ``next()``.
        """
        return TextStream(
            self._events(prompt, documents, max_new_tokens, temperature, top_p, top_k, seed, stop)
        )

    async def agenerate(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> SpecKVResult:
        """:meth:`generate` in a worker thread, so the event loop keeps running."""
        stream = self.astream(
            prompt,
            documents=documents,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=stop,
        )
        async for _ in stream:
            pass
        return stream.result

    def astream(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncSpecKVStream:
        """:meth:`stream` for asyncio: generation runs in a worker thread.

        Arguments are validated now; the worker starts on the first ``__anext__``. Leaving
        early: ``await stream.aclose()`` stops the worker and waits until the engine is free.
        """
        events = self._events(
            prompt, documents, max_new_tokens, temperature, top_p, top_k, seed, stop
        )
        return AsyncTextStream(lambda: events)

    def render(self, prompt: Prompt, tokenizer: PreTrainedTokenizerBase | None = None) -> list[int]:
        """Token ids the target (or ``tokenizer``) reads for ``prompt``; see :meth:`generate`."""
        return render_prompt(tokenizer or self.target.tokenizer, validate_prompt(prompt))

    # ------------------------------------------------------------------ one generation
    def _events(
        self,
        prompt: Prompt,
        documents: Sequence[str] | None,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        stop: str | Sequence[str] | None,
    ) -> Generator[str, None, SpecKVResult]:
        """Validate eagerly, then return the generator doing the work."""
        prompt = validate_prompt(prompt)
        documents = _validate_documents(documents)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k)
        generator = make_generator(self.target.device, seed)
        stops = _validate_stop(stop)
        return self._run(prompt, documents, max_new_tokens, sampling, generator, stops)

    def _run(
        self,
        prompt: Prompt,
        documents: list[str] | None,
        max_new_tokens: int,
        sampling: Sampling,
        generator: torch.Generator,
        stops: list[str],
    ) -> Generator[str, None, SpecKVResult]:
        with self._lock:
            prompt, compression = self._with_documents(prompt, documents)
            ids = render_prompt(self.target.tokenizer, prompt)
            if not ids:
                raise ValueError("prompt must not be empty: it renders to no tokens")
            length = len(ids)
            rescore = self.settings.rescore_every
            prefill_keep = self.budget - (rescore or 0)
            evict = length > prefill_keep

            streaming = self.settings.policy == "streaming"
            lookahead = self._lookahead(max_new_tokens) if evict else 0
            config = self.target.model.config
            # Refuse before spending time on the draft; re-checked with the actual answer
            # length, which can exceed `lookahead` when the draft has another tokenizer.
            plan_layers(config, length + max(lookahead, max_new_tokens))

            answer: list[int] = []
            draft_seconds = 0.0
            if lookahead:  # no eviction or no draft: nothing to look ahead for
                started = time.perf_counter()
                answer = self._draft_answer(prompt, ids, lookahead)
                draft_seconds = time.perf_counter() - started

            started = time.perf_counter()
            plan = plan_layers(config, length + max(len(answer), max_new_tokens))
            budgeted = frozenset(plan.budgeted_layers)
            cache = BudgetedCache(plan)
            # The streaming policy picks by position alone: no observer, so attention is
            # never captured or scored.
            scorer = (
                DraftGuidedScores(
                    length,
                    self.settings.window,
                    budgeted,
                    self.settings.reduction,
                    self.settings.query_chunk,
                )
                if evict and not streaming
                else None
            )
            recent = (
                RecentQueries(self.settings.window, budgeted)
                if rescore and not streaming
                else None
            )
            prompt_observers = [observer for observer in (scorer, recent) if observer is not None]
            logits = self._forward(ids, 0, cache, _fan_out(prompt_observers))
            if answer:
                cache.start_rollback()
                self._forward(answer, length, cache, scorer)
                cache.rollback(len(answer))
            if evict:
                for layer in plan.budgeted_layers:
                    scores = scorer.result(layer)[..., :length] if scorer is not None else None
                    self._evict(cache, layer, scores, prefill_keep)
            prefill_entries = cache.entries()
            prefill_seconds = time.perf_counter() - started

            started = time.perf_counter()
            text = IncrementalText(self.target.tokenizer)
            shown = StopText(stops)
            tokens: list[int] = []
            finish: FinishReason = "length"
            peak = rescores = forwards = 0
            position = length
            for step in range(max_new_tokens):
                token = next_token(logits[0], sampling, generator)
                tokens.append(token)
                yield shown.add(text.push(token))
                if token in self._target_eos:
                    finish = "eos"
                    break
                if shown.stopped:
                    finish = "stop"
                    break
                if step == max_new_tokens - 1:
                    break
                if rescore is not None and _largest(cache, budgeted) >= self.budget:
                    self._rescore(cache, budgeted, recent, prefill_keep)
                    rescores += 1
                logits = self._forward([token], position, cache, recent)
                position += 1
                forwards += 1
                peak = max(peak, _largest(cache, budgeted))
            if not shown.stopped:
                yield shown.add(text.flush())
                if shown.stopped:
                    finish = "stop"
                else:
                    yield shown.finish()
            decode_seconds = time.perf_counter() - started

            entries = cache.entries()
            sizes = cache.entry_bytes()
            full_entries = [
                length + forwards if index in budgeted else held
                for index, held in enumerate(entries)
            ]
            return SpecKVResult(
                text=shown.text,
                token_ids=tokens,
                finish_reason=finish,
                prompt_tokens=length,
                lookahead_tokens=len(answer),
                budget=self.budget,
                evicted=evict,
                budgeted_layers=sorted(budgeted),
                prefill_cache_entries=prefill_entries,
                cache_entries=entries,
                peak_decode_entries=peak,
                rescores=rescores,
                kv_bytes=cache.kv_bytes(),
                full_kv_bytes=sum(n * size for n, size in zip(full_entries, sizes, strict=True)),
                draft_seconds=draft_seconds,
                prefill_seconds=prefill_seconds,
                decode_seconds=decode_seconds,
                decode_tokens_per_second=forwards / decode_seconds if decode_seconds > 0 else 0.0,
                compression=compression,
            )

    # ------------------------------------------------------------------ steps
    def _with_documents(
        self, prompt: Prompt, documents: list[str] | None
    ) -> tuple[Prompt, CompressionResult | None]:
        """Fold documents (compressed when a compressor is set) into the prompt."""
        if documents is None:
            return prompt, None
        if isinstance(prompt, str):
            question = prompt
        else:
            users = [index for index, message in enumerate(prompt) if message["role"] == "user"]
            if not users:
                raise ValueError("documents need a user message to attach to; messages have none")
            question = prompt[users[-1]]["content"]
        compression = None
        if self.compressor is not None and documents:
            compression = self.compressor.compress(documents, question)
            context = compression.context()
        else:
            context = "\n\n".join(documents)
        filled = self.settings.document_template.format(context=context, question=question)
        if isinstance(prompt, str):
            return filled, compression
        messages = [dict(message) for message in prompt]
        messages[users[-1]]["content"] = filled
        return messages, compression

    def _lookahead(self, max_new_tokens: int) -> int:
        """Draft tokens to generate: the setting, or min(max_new_tokens, max_lookahead).

        0 with the streaming policy, even when a compressor brought its draft: that
        draft compresses documents, it does not guide eviction.
        """
        if self.draft is None or self.settings.policy == "streaming":
            return 0
        if self.settings.lookahead is not None:
            return self.settings.lookahead
        return min(max_new_tokens, self.settings.max_lookahead)

    def _draft_answer(self, prompt: Prompt, target_ids: list[int], lookahead: int) -> list[int]:
        """The draft's greedy approximate answer, as target token ids."""
        assert self.draft is not None
        draft_ids = (
            target_ids if self._shared_vocab else render_prompt(self.draft.tokenizer, prompt)
        )
        answer = self._greedy(self.draft, draft_ids, lookahead)
        if self._shared_vocab:
            return answer
        text = self.draft.tokenizer.decode(answer, skip_special_tokens=True)
        return self.target.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _greedy(self, loaded: LoadedModel, ids: list[int], count: int) -> list[int]:
        """Plain greedy decoding with a full cache (the draft is never evicted)."""
        cache = DynamicCache(config=loaded.model.config)
        logits = self._forward(ids, 0, cache, None, loaded)
        out: list[int] = []
        for step in range(count):
            token = int(torch.argmax(logits[0]))
            if token in self._draft_eos:
                break
            out.append(token)
            if step < count - 1:
                logits = self._forward([token], len(ids) + step, cache, None, loaded)
        return out

    def _forward(
        self,
        ids: list[int],
        start: int,
        cache: Any,
        observer: Any,
        loaded: LoadedModel | None = None,
    ) -> torch.Tensor:
        """One forward over ``ids`` at positions ``start...``; last position's logits.

        Positions are explicit because an evicted cache is shorter than the sequence.
        """
        loaded = loaded or self.target
        input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
        positions = torch.arange(start, start + len(ids), device=loaded.device)[None, :]
        scope: AbstractContextManager[Any] = (
            capture_attention(observer) if observer is not None else nullcontext()
        )
        with torch.inference_mode(), scope:
            output = loaded.model(
                input_ids=input_ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return output.logits[:, -1, :]

    def _evict(
        self, cache: BudgetedCache, layer: int, scores: torch.Tensor | None, keep: int
    ) -> None:
        """Cut one layer down to ``keep`` of the entries it holds, by the policy.

        ``scores`` (``(batch, kv_heads, entries)``) rank the entries for the attention
        policy: the window plus the best others are kept. The streaming policy passes
        ``None`` and keeps the sinks plus the most recent entries. Both end in the same
        per-head gather, so positions, masks and byte counts behave identically.
        """
        with torch.inference_mode():
            if scores is None:
                keys = cache.layer_keys(layer)
                batch, kv_heads, entries = keys.shape[0], keys.shape[1], keys.shape[2]
                indices = sink_and_recent_indices(
                    entries,
                    keep,
                    self.settings.sink_tokens,
                    batch=batch,
                    kv_heads=kv_heads,
                    device=keys.device,
                )
            else:
                pooled = pool_scores(scores, self.settings.pool_kernel)
                indices = keep_indices(pooled, keep, min(self.settings.window, keep))
            cache.keep(layer, indices)

    def _rescore(
        self,
        cache: BudgetedCache,
        budgeted: frozenset[int],
        recent: RecentQueries | None,
        keep: int,
    ) -> None:
        """Evict during decoding, every budgeted layer back to ``keep`` entries.

        The attention policy re-scores with the latest tokens' queries (``recent``); the
        streaming policy (``recent=None``) cuts back to sinks + most recent entries.
        Eviction keeps entries in sequence order, so the first ``sink_tokens`` entries of a
        streaming cache are still the prompt's first positions here.
        """
        with torch.inference_mode():
            for layer in sorted(budgeted):
                scores = None
                if recent is not None:
                    scores = recent.scores(
                        layer,
                        cache.layer_keys(layer),
                        self.settings.reduction,
                        self.settings.query_chunk,
                    )
                self._evict(cache, layer, scores, keep)

    def __repr__(self) -> str:
        draft = self.draft.name if self.draft is not None else None
        return (
            f"SpecKV(target={self.target.name!r}, draft={draft!r}, budget={self.budget}, "
            f"{self.settings!r})"
        )


# ---------------------------------------------------------------------------- helpers
def _fan_out(observers: list[Any]) -> Any:
    if not observers:
        return None
    return observers[0] if len(observers) == 1 else FanOut(*observers)


def _largest(cache: BudgetedCache, budgeted: frozenset[int]) -> int:
    entries = cache.entries()
    return max((entries[index] for index in budgeted), default=0)


def _eos_ids(loaded: LoadedModel) -> frozenset[int]:
    """End-of-sequence ids as ``model.generate`` would use them."""
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = loaded.tokenizer.eos_token_id
    if configured is None:
        return frozenset()
    if isinstance(configured, int):
        return frozenset({configured})
    return frozenset(int(token) for token in configured)


def validate_budget(budget: object, settings: SpecKVSettings) -> int:
    """Check a cache budget against the settings (adapters validate without loading a model)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(
            f"budget must be an int (cache entries per layer), got {type(budget).__name__}"
        )
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if budget < settings.window:
        raise ValueError(
            f"budget ({budget}) must be at least window ({settings.window}): the last window "
            "prompt entries are always kept"
        )
    every = settings.rescore_every
    if every is not None and budget - every < settings.window:
        raise ValueError(
            f"rescore_every ({every}) must leave room for the window: budget - rescore_every "
            f"({budget - every}) < window ({settings.window})"
        )
    keep = budget - (every or 0)
    if settings.policy == "streaming" and settings.sink_tokens >= keep:
        kept = "budget - rescore_every" if every is not None else "budget"
        raise ValueError(
            f"sink_tokens ({settings.sink_tokens}) must be smaller than the entries kept after "
            f"eviction ({kept} = {keep}): policy='streaming' keeps the sinks plus at least "
            "one recent entry"
        )
    return budget


def _validate_documents(documents: object) -> list[str] | None:
    if documents is None:
        return None
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str, got {type(documents).__name__}")
    for position, document in enumerate(documents):
        if not isinstance(document, str):
            raise TypeError(f"documents[{position}] must be a str, got {type(document).__name__}")
    return list(documents)


def _validate_stop(stop: object) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if not isinstance(stop, Sequence) or not all(isinstance(item, str) for item in stop):
        raise TypeError("stop must be a str or a list of str")
    return [item for item in stop if item]


__all__ = [
    "AsyncSpecKVStream",
    "Message",
    "SpecKV",
    "SpecKVResult",
    "SpecKVSettings",
    "SpecKVStream",
    "render_prompt",
    "validate_budget",
]
