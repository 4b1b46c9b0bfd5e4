"""Several SpecKV engines answering one prompt from a single target prefill.

Why
---
Comparing eviction policies and budgets on one prompt (a benchmark, a budget sweep) runs
the same target forward over the same prompt once per engine, and at 4k tokens on a CPU
that forward is most of the time. The prefill does not depend on the policy or the budget:
only the observers watching it do. :func:`generate_shared_prefill` runs the forward once
with every engine's observers fanned out, then gives each engine its own copy of the cache
for the rest of its call (draft-answer scoring, eviction, decoding), through the same stages
:meth:`SpecKV.generate` composes. Each result is what that engine's own ``generate`` returns
(same tokens, same kept entries; the unit tests check this), except for timing:

- ``prefill_seconds`` is the shared forward plus the engine's own scoring and eviction (the
  cache copy excluded), i.e. what its own call would have spent, measured once;
- engines with the same draft and lookahead share one draft answer, so they report the
  same ``draft_seconds``;
- nothing overlaps: ``draft_overlapped`` is False.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from typing_extensions import Unpack

from ..validation import validate_documents
from .decoding import Prompt, TextStream, make_generator, validate_prompt
from .engine import SpecKV, _Call, _Prefill, _Spent
from .result import SpecKVResult
from .settings import GenerationKwargs, GenerationOptions


def generate_shared_prefill(
    engines: Sequence[SpecKV],
    prompt: Prompt,
    *,
    documents: Sequence[str] | None = None,
    **options: Unpack[GenerationKwargs],
) -> list[SpecKVResult]:
    """Generate with every engine in ``engines`` from one target forward over the prompt.

    Parameters
    ----------
    engines
        SpecKV engines sharing one target (the same :class:`~specrag.LoadedModel` object),
        any policies and budgets; none with a compressor or ``overlap_draft=True``.
    prompt, documents, **options
        As for :meth:`SpecKV.generate`; every engine answers the same request.

    Returns
    -------
    list[SpecKVResult]
        One result per engine, in order (see the module notes on timing).

    Raises
    ------
    ValueError
        For no engines, engines with different targets, a compressor (SpecKV-PC prefills
        another, compressed prompt), ``overlap_draft=True``, engines that render the prompt
        to different token ids (different ``document_template``) or need different layer
        plans (a sliding window one of them can reach): run those one by one.
    """
    if not engines:
        raise ValueError("generate_shared_prefill needs at least one engine")
    first = engines[0]
    _check_shareable(engines)
    prompt = validate_prompt(prompt)
    docs = None if documents is None else validate_documents(documents)
    settings = GenerationOptions(**options)
    with ExitStack() as locks:
        for engine in engines:
            locks.enter_context(engine._lock)
        calls = [engine._plan_call(prompt, docs, settings.max_new_tokens) for engine in engines]
        if any(call.ids != calls[0].ids for call in calls):
            raise ValueError(
                "the engines render this prompt to different target tokens (different document_template?); "
                "generate with each one by one"
            )
        answers = _draft_answers(engines, calls)
        plans = [
            engine._layer_plan(call, len(tokens))
            for engine, call, (tokens, _) in zip(engines, calls, answers, strict=True)
        ]
        if any(plan != plans[0] for plan in plans):
            raise ValueError(
                "the engines need different layer plans for this prompt (a sliding window only some of them "
                "reach); generate with each one by one"
            )
        observers = [engine._observers(call, plans[0]) for engine, call in zip(engines, calls, strict=True)]
        started = time.perf_counter()
        cache, logits = first._watched_prefill(
            calls[0].ids, plans[0], [watcher for pair in observers for watcher in pair]
        )
        shared_seconds = time.perf_counter() - started

        results = []
        for index, (engine, call, (answer, draft_seconds), (scorer, recent)) in enumerate(
            zip(engines, calls, answers, observers, strict=True)
        ):
            own_cache = cache if index == len(engines) - 1 else copy.deepcopy(cache)
            prefill = _Prefill(plans[0], own_cache, scorer, recent, logits)
            started = time.perf_counter()
            engine._score_and_evict(call, prefill, answer)
            spent = _Spent(tuple(answer), draft_seconds, False, shared_seconds + time.perf_counter() - started)
            generator = make_generator(engine.target.device, settings.seed)
            stream = TextStream(engine._decode(call, prefill, settings, generator, spent))
            for _ in stream:
                pass
            results.append(stream.result)
    return results


def _draft_answers(engines: Sequence[SpecKV], calls: Sequence[_Call]) -> list[tuple[list[int], float]]:
    """Each engine's draft answer (target ids) and its seconds; engines with the same draft,
    draft prompt and lookahead share one answer, as their own calls would all write it."""
    drafts: dict[tuple[Any, ...], tuple[list[int], float]] = {}
    answers: list[tuple[list[int], float]] = []
    for engine, call in zip(engines, calls, strict=True):
        if not call.lookahead:
            answers.append(([], 0.0))
            continue
        draft_ids = engine._draft_ids(call.prompt, call.ids, call.lookahead)
        key = (id(engine.draft), engine._shared_vocab, tuple(draft_ids), call.lookahead)
        if key not in drafts:
            drafts[key] = engine._timed_draft(draft_ids, call.lookahead)
        engine._check_positions(call.length, len(drafts[key][0]), call.max_new_tokens)
        answers.append(drafts[key])
    return answers


def _check_shareable(engines: Sequence[SpecKV]) -> None:
    for engine in engines:
        if not isinstance(engine, SpecKV):
            raise TypeError(f"engines must be SpecKV instances, got {type(engine).__name__}")
    target = engines[0].target
    for engine in engines:
        if engine.target is not target:
            raise ValueError("the engines must share one target model (the same LoadedModel) to share its prefill")
        if engine.compressor is not None:
            raise ValueError(
                "an engine with a compressor (SpecKV-PC) prefills its own compressed prompt; generate with it alone"
            )
        if engine.settings.overlap_draft:
            raise ValueError(
                "an engine with overlap_draft=True times its draft beside its own prefill; generate with it alone"
            )


__all__ = ["generate_shared_prefill"]
