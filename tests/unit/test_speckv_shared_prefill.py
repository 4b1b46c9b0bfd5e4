"""``generate_shared_prefill``: many engines, one target prefill, each result its own.

Every test compares the shared run against each engine's own ``generate`` on tiny random
models: sharing the forward may change what a call costs, never what it keeps or writes.
"""

from __future__ import annotations

import pytest

from speckv_inputs import MIXED, PROMPT, other_tokenizer_model
from specrag import LoadedModel, SpecKV, SpecPC, build_tiny_model
from specrag.core.speckv.shared_prefill import generate_shared_prefill

DOCS = [PROMPT, "The Loire is the longest river in France and flows into the Atlantic."]


def _engines(target: LoadedModel, draft: LoadedModel) -> list[SpecKV]:
    return [
        SpecKV(target, None, budget=1 << 20),  # no eviction
        SpecKV(target, None, budget=40, window=8, policy="snapkv"),
        SpecKV(target, draft, budget=40, window=8),
        SpecKV(target, draft, budget=60, window=8),
        SpecKV(target, draft, budget=40, window=8, lookahead=3),
        SpecKV(target, None, budget=40, window=8, policy="streaming"),
        SpecKV(target, None, budget=40, window=8, policy="knorm"),
        SpecKV(target, draft, budget=40, window=8, rescore_every=4),
    ]


def _assert_same(shared: list, alone: list) -> None:
    assert len(shared) == len(alone)
    for one, other in zip(shared, alone, strict=True):
        assert one.token_ids == other.token_ids
        assert one.text == other.text
        assert one.lookahead_tokens == other.lookahead_tokens
        assert one.draft_answer == other.draft_answer
        assert one.evicted == other.evicted
        assert one.prefill_cache_entries == other.prefill_cache_entries
        assert one.cache_entries == other.cache_entries
        assert one.rescores == other.rescores
        assert one.kv_bytes == other.kv_bytes and one.full_kv_bytes == other.full_kv_bytes
        assert not one.draft_overlapped


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [pytest.param("llama", {}, id="llama"), pytest.param("gemma3", MIXED, id="gemma3-window16")],
)
def test_every_engine_gets_what_its_own_generate_returns(arch, overrides):
    target, draft = build_tiny_model(arch, **overrides), build_tiny_model(arch, seed=1, **overrides)
    engines = _engines(target, draft)
    alone = [engine.generate(PROMPT, max_new_tokens=10) for engine in engines]
    shared = generate_shared_prefill(engines, PROMPT, max_new_tokens=10)
    _assert_same(shared, alone)
    assert shared[0].evicted is False and shared[1].evicted and shared[2].lookahead_tokens > 0
    assert shared[2].cache_entries != shared[3].cache_entries  # the budgets really differ


def test_documents_stops_and_a_draft_with_another_tokenizer(llama):
    other = other_tokenizer_model()
    engines = [SpecKV(llama, other, budget=40, window=8, lookahead=6), SpecKV(llama, None, budget=48, window=8)]
    options = {"documents": DOCS, "max_new_tokens": 8, "stop": ["ab"]}
    alone = [engine.generate("Which river flows through Paris?", **options) for engine in engines]
    _assert_same(generate_shared_prefill(engines, "Which river flows through Paris?", **options), alone)


def test_sampling_with_a_seed_matches_each_engine_alone(llama, draft):
    engines = [SpecKV(llama, draft, budget=40, window=8), SpecKV(llama, None, budget=40, window=8, policy="snapkv")]
    options = {"max_new_tokens": 8, "temperature": 1.0, "seed": 7}
    alone = [engine.generate(PROMPT, **options) for engine in engines]
    _assert_same(generate_shared_prefill(engines, PROMPT, **options), alone)


def test_engines_with_one_draft_share_its_answer_and_its_seconds(llama, draft):
    engines = [SpecKV(llama, draft, budget=40, window=8), SpecKV(llama, draft, budget=56, window=8)]
    first, second = generate_shared_prefill(engines, PROMPT, max_new_tokens=4)
    assert first.draft_seconds > 0 and first.draft_seconds == second.draft_seconds
    assert first.prefill_seconds > 0 and second.prefill_seconds > 0
    assert first.time_to_first_token == pytest.approx(first.draft_seconds + first.prefill_seconds)


def test_refuses_engines_that_cannot_share_a_prefill(llama, draft, qwen2):
    with pytest.raises(ValueError, match="at least one engine"):
        generate_shared_prefill([], PROMPT)
    with pytest.raises(ValueError, match="share one target"):
        generate_shared_prefill([SpecKV(llama, None, budget=40), SpecKV(qwen2, None, budget=40)], PROMPT)
    compressor = SpecPC(draft, keep_ratio=0.5, progress=False)
    with pytest.raises(ValueError, match="compressor"):
        generate_shared_prefill([SpecKV(llama, None, budget=40, compressor=compressor)], PROMPT, documents=DOCS)
    with pytest.raises(ValueError, match="overlap_draft"):
        generate_shared_prefill([SpecKV(llama, draft, budget=40, overlap_draft=True)], PROMPT)
    templated = SpecKV(llama, None, budget=40, document_template="{context}\n\nQ: {question}")
    with pytest.raises(ValueError, match="different target tokens"):
        generate_shared_prefill([SpecKV(llama, None, budget=40), templated], "Which river?", documents=DOCS)
    with pytest.raises(TypeError, match="SpecKV instances"):
        generate_shared_prefill([SpecKV(llama, None, budget=40), "engine"], PROMPT)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="SpecKV instances"):  # first in the list too: no AttributeError
        generate_shared_prefill(["engine", SpecKV(llama, None, budget=40)], PROMPT)  # type: ignore[list-item]
