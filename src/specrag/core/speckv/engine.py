"""SpecKV: generate with a KV cache kept to a budget, chosen by a draft model's answer.

One :meth:`SpecKV.generate` call::

    prompt | messages (+ documents, SpecPC-compressed when a compressor is set)
      -> target token ids (chat template when the tokenizer has one)
      -> draft writes an approximate answer (greedy, ``lookahead`` tokens)   [only if the
         prompt is longer than the budget and the policy uses a draft; with
         ``overlap_draft``, in a worker thread while the target prefills the prompt]
      -> target prefills the prompt, then the draft answer on top of it, while the
         policy's observer watches (e.g. folds the attention of the last ``window`` prompt
         queries and of every draft-answer query, per layer and KV head)
      -> draft-answer entries rolled back; the policy picks, per budgeted layer and KV
         head, the entries kept (the last ``window`` prompt entries always among them)
      -> own decode loop: greedy or sampled, stop strings, EOS, streaming; positions
         continue the original prompt length while the cache is shorter
      -> optional re-scoring every ``rescore_every`` tokens keeps the cache in budget

The prompt's first answer token comes from the target's own logits over the *full*
prompt (eviction happens after that forward), as in the paper.

How entries are picked is the policy's (:mod:`specrag.core.speckv.policies`: SpecKV's
draft attention, SnapKV, StreamingLLM, ...); this module only runs the forwards, the
eviction points and the decode loop, identically for every policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase
from typing_extensions import Unpack

from ..attention import AttentionObserver, capture_attention, enable_capture
from ..models import LoadedModel, cache_argument, last_logits_only, load_model
from ..specpc import CompressionResult, SpecPC
from ..validation import validate_documents
from .attention_scores import FanOut
from .cache import BudgetedCache, LayerPlan, plan_layers
from .decoding import (
    AsyncTextStream,
    IncrementalText,
    Prompt,
    StopText,
    TextStream,
    decode_text,
    make_generator,
    next_token,
    render_prompt,
    validate_prompt,
)
from .policies import DraftAttention, EntryScorer, EvictionPolicy
from .result import FinishReason, SpecKVResult
from .settings import (
    GenerationKwargs,
    GenerationOptions,
    kept_after_eviction,
    resolve_config,
    validate_budget,
)

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
        token ids cross directly. ``None``: no lookahead (the default policy then scores like
        SnapKV), or the compressor's draft if one is given. Refused with a policy that reads no
        draft, where it would silently do nothing.
    budget
        Cache entries each budgeted layer keeps after prefill (per KV head); see
        :mod:`specrag.core.budget` for every budget's meaning. At least ``window``.
    compressor
        A :class:`~specrag.SpecPC` for SpecKV-PC: documents passed to :meth:`generate` are
        compressed with it first, then the cache is evicted, with one draft (the
        compressor's; passing a different ``draft`` is an error).
    device, dtype
        Where and how to load models given by name.
    **settings
        ``policy`` (a registered name, default ``"attention"``, i.e. ``"speckv"`` that
        also runs without a draft; or an :class:`~specrag.core.speckv.policies.EvictionPolicy`),
        the policy's own settings beside a name (e.g. ``sink_tokens`` for ``"streaming"``,
        ``pool_kernel``/``lookahead`` for ``"speckv"``), and :class:`SpecKVSettings` fields
        (``window``, ``rescore_every``, ``document_template``).

    Notes
    -----
    Thread safety: each instance generates one request at a time (a re-entrant lock is
    held for a whole generation, streams included); other threads wait. Attention capture is
    scoped to the generating thread, so several instances sharing a model do not interfere.

    Raises
    ------
    TypeError, ValueError
        For a non-int or too small ``budget``, invalid settings, or a ``draft`` given with a
        policy that reads none.
    UnsupportedModelError
        For models with layers SpecKV cannot serve (see :mod:`specrag.core.speckv.cache`).
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
        if compressor is not None and not isinstance(compressor, SpecPC):
            raise TypeError(f"compressor must be a SpecPC, got {type(compressor).__name__}")
        self.settings, self.policy = resolve_config(settings, has_draft=draft is not None or compressor is not None)
        self.budget = validate_budget(budget, self.settings, self.policy)
        check_draft(self.policy, draft)
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
        self._worker: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ public API
    def generate(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        **options: Unpack[GenerationKwargs],
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
        **options
            :class:`~specrag.core.speckv.settings.GenerationOptions`: ``max_new_tokens``
            (256), ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``seed``, ``stop``.

        Returns
        -------
        SpecKVResult
        """
        stream = self.stream(prompt, documents=documents, **options)
        for _ in stream:
            pass
        return stream.result

    def stream(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> SpecKVStream:
        """Like :meth:`generate`, as an iterator of text deltas (see :class:`SpecKVStream`).

        Arguments are validated now; the work starts on the first ``next()``.
        """
        return TextStream(self._events(prompt, documents, GenerationOptions(**options)))

    async def agenerate(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> SpecKVResult:
        """:meth:`generate` in a worker thread, so the event loop keeps running."""
        stream = self.astream(prompt, documents=documents, **options)
        async for _ in stream:
            pass
        return stream.result

    def astream(
        self,
        prompt: Prompt,
        *,
        documents: Sequence[str] | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> AsyncSpecKVStream:
        """:meth:`stream` for asyncio: generation runs in a worker thread.

        Arguments are validated now; the worker starts on the first ``__anext__``. Leaving
        early: ``await stream.aclose()`` stops the worker and waits until the engine is free.
        """
        events = self._events(prompt, documents, GenerationOptions(**options))
        return AsyncTextStream(lambda: events)

    def render(self, prompt: Prompt, tokenizer: PreTrainedTokenizerBase | None = None) -> list[int]:
        """Token ids the target (or ``tokenizer``) reads for ``prompt``; see :meth:`generate`."""
        owner = "the tokenizer" if tokenizer is not None else f"target {self.target.name!r}"
        return render_prompt(tokenizer or self.target.tokenizer, validate_prompt(prompt), owner)

    # ------------------------------------------------------------------ one generation
    def _events(
        self, prompt: Prompt, documents: Sequence[str] | None, options: GenerationOptions
    ) -> Generator[str, None, SpecKVResult]:
        """Validate eagerly, then return the generator doing the work."""
        prompt = validate_prompt(prompt)
        docs = None if documents is None else validate_documents(documents)
        generator = make_generator(self.target.device, options.seed)
        return self._run(prompt, docs, options, generator)

    def _run(
        self,
        prompt: Prompt,
        documents: list[str] | None,
        options: GenerationOptions,
        generator: torch.Generator,
    ) -> Generator[str, None, SpecKVResult]:
        with self._lock:
            call = self._plan_call(prompt, documents, options.max_new_tokens)
            answer: list[int] = []
            draft_seconds = 0.0
            pending: Future[tuple[list[int], float]] | None = None
            overlapped = bool(call.lookahead) and self._overlaps()
            if call.lookahead:  # no eviction or no draft: nothing to look ahead for
                draft_ids = self._draft_ids(call.prompt, call.ids, call.lookahead)
                if overlapped:
                    pending = self._draft_worker().submit(self._timed_draft, draft_ids, call.lookahead, own_stream=True)
                else:
                    answer, draft_seconds = self._timed_draft(draft_ids, call.lookahead)
                    # Re-tokenized answers may be longer than the lookahead.
                    self._check_positions(call.length, len(answer), call.max_new_tokens)

            started = time.perf_counter()
            try:
                planned = len(answer) if pending is None else call.lookahead
                prefill = self._prefill(call, self._layer_plan(call, planned))
                if pending is not None:
                    answer, draft_seconds = pending.result()
                    pending = None
                    self._check_positions(call.length, len(answer), call.max_new_tokens)
                    needed = self._layer_plan(call, len(answer))
                    if needed != prefill.plan:
                        # A re-tokenized answer longer than the lookahead made a sliding
                        # window reachable: prefill again under the plan this call needs.
                        prefill = self._prefill(call, needed)
            finally:
                if pending is not None:  # the prefill failed: let the draft finish before the lock opens
                    wait([pending])
            self._score_and_evict(call, prefill, answer)
            prefill_seconds = time.perf_counter() - started
            return (
                yield from self._decode(
                    call, prefill, options, generator, _Spent(tuple(answer), draft_seconds, overlapped, prefill_seconds)
                )
            )

    def _plan_call(self, prompt: Prompt, documents: list[str] | None, max_new_tokens: int) -> _Call:
        """The target's token ids and what this call will do with them, refused up front
        (empty prompt, too many positions) before any model time is spent."""
        prompt, compression = self._with_documents(prompt, documents)
        ids = render_prompt(self.target.tokenizer, prompt, f"target {self.target.name!r}")
        if not ids:
            raise ValueError("prompt must not be empty: it renders to no tokens")
        length = len(ids)
        keep = kept_after_eviction(self.budget, self.settings)
        evict = length > keep
        lookahead = self._lookahead(max_new_tokens) if evict else 0
        self._check_positions(length, lookahead, max_new_tokens)
        call = _Call(prompt, ids, compression, max_new_tokens, evict, keep, lookahead)
        # Refuse before spending time on the draft; re-checked with the actual answer
        # length, which can exceed `lookahead` when the draft has another tokenizer.
        self._layer_plan(call, lookahead)
        return call

    def _layer_plan(self, call: _Call, answer_tokens: int) -> LayerPlan:
        """Which layers this call budgets, given how many draft-answer tokens it scores."""
        return plan_layers(self.target.model.config, call.length + max(answer_tokens, call.max_new_tokens))

    def _score_and_evict(self, call: _Call, prefill: _Prefill, answer: list[int]) -> None:
        """The target reads the draft's answer on top of the prompt (watched by the
        policy's scorer, then rolled back) and the budgeted layers are cut to the budget."""
        cache, scorer = prefill.cache, prefill.scorer
        if answer:
            cache.start_rollback()
            self._forward(answer, call.length, cache, scorer)
            cache.rollback(len(answer))
        if call.evict:
            self._evict(cache, frozenset(prefill.plan.budgeted_layers), scorer, call.keep)

    def _decode(
        self,
        call: _Call,
        prefill: _Prefill,
        options: GenerationOptions,
        generator: torch.Generator,
        spent: _Spent,
    ) -> Generator[str, None, SpecKVResult]:
        """Decode from the evicted prefill (its last logits give the first token): stop
        strings, EOS, streaming, optional re-scoring; then the call's result."""
        cache, recent, logits = prefill.cache, prefill.recent, prefill.logits
        budgeted = frozenset(prefill.plan.budgeted_layers)
        rescore = self.settings.rescore_every
        length, max_new_tokens = call.length, call.max_new_tokens
        prefill_entries = cache.entries()
        started = time.perf_counter()
        text = IncrementalText(self.target.tokenizer)
        shown = StopText(list(options.stop or ()))
        tokens: list[int] = []
        finish: FinishReason = "length"
        peak = rescores = forwards = 0
        position = length
        for step in range(max_new_tokens):
            token = next_token(logits[0], options.sampling, generator)
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
                self._evict(cache, budgeted, recent, call.keep)
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
        full_entries = [length + forwards if index in budgeted else held for index, held in enumerate(entries)]
        return SpecKVResult(
            text=shown.text,
            token_ids=tokens,
            finish_reason=finish,
            prompt_tokens=length,
            lookahead_tokens=len(spent.answer),
            draft_answer=decode_text(self.target.tokenizer, spent.answer),
            budget=self.budget,
            evicted=call.evict,
            budgeted_layers=sorted(budgeted),
            prefill_cache_entries=prefill_entries,
            cache_entries=entries,
            peak_decode_entries=peak,
            rescores=rescores,
            kv_bytes=cache.kv_bytes(),
            full_kv_bytes=sum(n * size for n, size in zip(full_entries, sizes, strict=True)),
            draft_seconds=spent.draft_seconds,
            draft_overlapped=spent.overlapped,
            prefill_seconds=spent.prefill_seconds,
            decode_seconds=decode_seconds,
            decode_tokens_per_second=forwards / decode_seconds if decode_seconds > 0 else 0.0,
            compression=call.compression,
        )

    # ------------------------------------------------------------------ steps
    def _with_documents(self, prompt: Prompt, documents: list[str] | None) -> tuple[Prompt, CompressionResult | None]:
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
        messages: list[dict[str, Any]] = [dict(message) for message in prompt]
        messages[users[-1]]["content"] = filled
        return messages, compression

    def _lookahead(self, max_new_tokens: int) -> int:
        """Draft tokens to generate: 0 unless the policy reads a draft answer and there is
        a draft (a compressor's draft compresses documents; it guides eviction only when
        the policy uses one)."""
        if self.draft is None or not isinstance(self.policy, DraftAttention):
            return 0
        return self.policy.lookahead_tokens(max_new_tokens)

    def _check_positions(self, length: int, lookahead: int, max_new_tokens: int) -> None:
        """Refuse a call that would run the target past its position limit.

        The target reads the prompt plus the draft's answer (then rolled back) and decodes
        from the prompt's end, so it needs ``length + max(lookahead, max_new_tokens)``
        positions. Beyond ``max_position_embeddings`` rotary models do not fail, they
        answer from positions they were never trained on: a silent wrong answer.
        """
        _check_fits(self.target, "target", length, lookahead, max_new_tokens, length + max(lookahead, max_new_tokens))

    def _draft_ids(self, prompt: Prompt, target_ids: list[int], lookahead: int) -> list[int]:
        """The prompt as the draft reads it, refused up front if the draft cannot read it
        plus ``lookahead`` tokens (before any model time is spent)."""
        assert self.draft is not None
        draft_ids = (
            target_ids
            if self._shared_vocab
            else render_prompt(self.draft.tokenizer, prompt, f"draft {self.draft.name!r}")
        )
        _check_fits(self.draft, "draft", len(draft_ids), lookahead, 0, len(draft_ids) + lookahead)
        return draft_ids

    def _timed_draft(
        self, draft_ids: list[int], lookahead: int, *, own_stream: bool = False
    ) -> tuple[list[int], float]:
        """The draft's greedy approximate answer, as target token ids, and its seconds.

        Runs in the caller's thread or, overlapping the prefill, in the draft worker with
        ``own_stream``: a CUDA draft then gets a stream of its own, so its kernels can
        interleave with the target's on one GPU (its tokens come back as ints, which
        synchronises that stream before the target reads them).
        """
        assert self.draft is not None
        started = time.perf_counter()
        scope: AbstractContextManager[Any] = nullcontext()
        if own_stream and self.draft.device.type == "cuda":
            scope = torch.cuda.stream(torch.cuda.Stream(self.draft.device))
        with scope:
            answer = self._greedy(self.draft, draft_ids, lookahead)
        if not self._shared_vocab:
            text = self.draft.tokenizer.decode(answer, skip_special_tokens=True)
            answer = self.target.tokenizer.encode(text, add_special_tokens=False) if text else []
        return answer, time.perf_counter() - started

    def _overlaps(self) -> bool:
        """Whether the draft runs beside the target's prefill (``overlap_draft``)."""
        chosen = self.settings.overlap_draft
        if chosen is not None:
            return chosen
        assert self.draft is not None
        return self.draft.device != self.target.device

    def _draft_worker(self) -> ThreadPoolExecutor:
        """The one thread drafts run in when they overlap the prefill (made on first use)."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specrag-draft")
        return self._worker

    def _prefill(self, call: _Call, plan: LayerPlan) -> _Prefill:
        """The target's forward over the prompt into a fresh budgeted cache, watched by the
        policy's prefill observer (when evicting) and decode observer (when re-scoring)."""
        scorer, recent = self._observers(call, plan)
        cache, logits = self._watched_prefill(call.ids, plan, [scorer, recent])
        return _Prefill(plan, cache, scorer, recent, logits)

    def _watched_prefill(
        self, ids: list[int], plan: LayerPlan, observers: Sequence[EntryScorer | None]
    ) -> tuple[BudgetedCache, torch.Tensor]:
        """The forward over ``ids`` into a fresh budgeted cache, watched by ``observers``
        (this call's, or several engines' when they share the prefill); last logits."""
        cache = BudgetedCache(plan)
        return cache, self._forward(ids, 0, cache, _fan_out(observers))

    def _observers(self, call: _Call, plan: LayerPlan) -> tuple[EntryScorer | None, EntryScorer | None]:
        """This call's fresh prefill scorer (when evicting) and decode observer (when re-scoring)."""
        budgeted = frozenset(plan.budgeted_layers)
        window = self.settings.window
        scorer = (
            self.policy.observer("prefill", prompt_length=call.length, window=window, layers=budgeted)
            if call.evict
            else None
        )
        recent = (
            self.policy.observer("decode", prompt_length=call.length, window=window, layers=budgeted)
            if self.settings.rescore_every
            else None
        )
        return scorer, recent

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
        observer: AttentionObserver | None,
        loaded: LoadedModel | None = None,
    ) -> torch.Tensor:
        """One forward over ``ids`` at positions ``start...``; last position's logits.

        Positions are explicit because an evicted cache is shorter than the sequence.
        """
        loaded = loaded or self.target
        input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
        positions = torch.arange(start, start + len(ids), device=loaded.device)[None, :]
        scope: AbstractContextManager[Any] = capture_attention(observer) if observer is not None else nullcontext()
        with torch.inference_mode(), scope:
            output = loaded.model(
                input_ids=input_ids,
                position_ids=positions,
                use_cache=True,
                **cache_argument(loaded.model, cache),
                logits_to_keep=last_logits_only(len(ids), loaded.device),
            )
        return output.logits[:, -1, :]

    def _evict(self, cache: BudgetedCache, budgeted: frozenset[int], observer: EntryScorer | None, keep: int) -> None:
        """Cut every budgeted layer down to ``keep`` entries, as the policy picks them.

        Runs after prefill (``observer``: the prefill's) and, with ``rescore_every``, during
        decoding (the newest tokens' observer). Every policy ends in the same per-head
        gather, so positions, masks and byte counts behave identically.
        """
        with torch.inference_mode():
            for layer in sorted(budgeted):
                keys = cache.layer_keys(layer)
                indices = self.policy.select(layer, keys, keep, self.settings.window, observer)
                cache.keep(layer, indices)

    def __repr__(self) -> str:
        draft = self.draft.name if self.draft is not None else None
        return (
            f"SpecKV(target={self.target.name!r}, draft={draft!r}, budget={self.budget}, "
            f"policy={self.policy!r}, {self.settings!r})"
        )


def check_draft(policy: EvictionPolicy, draft: object) -> None:
    """Refuse a draft the policy would never read.

    Refused, not ignored: a caller passing a draft expects it to guide eviction, and a
    silently unused draft would make, say, a streaming row look like SpecKV.
    """
    if draft is not None and not policy.uses_draft:
        raise ValueError(
            f"policy {policy.name!r} runs no draft, but a draft was given; pass draft=None "
            "(or use policy='speckv' for draft-guided eviction)"
        )


# ---------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _Call:
    """One call's prompt as the target reads it, and what the call will do with it."""

    prompt: Prompt
    ids: list[int]
    compression: CompressionResult | None
    max_new_tokens: int
    evict: bool
    keep: int
    """Entries per budgeted layer after eviction."""
    lookahead: int
    """Draft tokens to write (0: no draft runs)."""

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Spent:
    """What a call spent before decoding, for its result."""

    answer: tuple[int, ...]
    """The draft's answer as target token ids (empty when no draft ran)."""
    draft_seconds: float
    overlapped: bool
    prefill_seconds: float


@dataclass
class _Prefill:
    """The target's cache and observers right after the prompt's forward."""

    plan: LayerPlan
    cache: BudgetedCache
    scorer: EntryScorer | None
    recent: EntryScorer | None
    logits: torch.Tensor


def _fan_out(observers: Sequence[EntryScorer | None]) -> AttentionObserver | None:
    present = [observer for observer in observers if observer is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else FanOut(*present)


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


__all__ = [
    "AsyncSpecKVStream",
    "SpecKV",
    "SpecKVStream",
    "check_draft",
]


def _check_fits(model: LoadedModel, role: str, length: int, lookahead: int, max_new_tokens: int, needed: int) -> None:
    """One-line refusal when ``needed`` positions exceed ``model``'s limit (if it states one)."""
    limit = model.max_positions
    if limit is None or needed <= limit:
        return
    parts = [f"max_new_tokens={max_new_tokens}"] if max_new_tokens else []
    parts += [f"{lookahead} draft lookahead tokens"] if lookahead else []
    extra = f" plus {' and '.join(parts)}" if parts else ""
    raise ValueError(
        f"the prompt is {length} tokens{extra}: {role} {model.name!r} would need {needed} positions but reads at "
        f"most {limit}; shorten the prompt, compress the documents (compressor=SpecPC(...)) or lower max_new_tokens"
        + (" or the policy's lookahead, or load a draft that reads more positions" if role == "draft" else "")
    )
