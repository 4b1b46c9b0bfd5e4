"""SpecKV's ``overlap_draft``: the draft writing its answer while the target prefills.

Overlapping changes when the draft runs, never what it writes or what is kept: every test
compares a generation with the draft in the worker thread against the same generation run
in order, on tiny random models.
"""

from __future__ import annotations

import pytest

from speckv_inputs import MIXED, PROMPT, other_tokenizer_model
from specrag import LoadedModel, SpecKV, SpecPC, build_tiny_model
from specrag.core.speckv.cache import plan_layers


def _same_generation(target: LoadedModel, draft: LoadedModel, **settings: object) -> None:
    ordered = SpecKV(target, draft, overlap_draft=False, **settings).generate(PROMPT, max_new_tokens=10)
    overlapped = SpecKV(target, draft, overlap_draft=True, **settings).generate(PROMPT, max_new_tokens=10)
    assert overlapped.draft_overlapped and not ordered.draft_overlapped
    assert overlapped.evicted and overlapped.lookahead_tokens > 0
    assert overlapped.token_ids == ordered.token_ids
    assert overlapped.lookahead_tokens == ordered.lookahead_tokens
    assert overlapped.prefill_cache_entries == ordered.prefill_cache_entries
    assert overlapped.cache_entries == ordered.cache_entries


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [pytest.param("llama", {}, id="llama"), pytest.param("gemma3", MIXED, id="gemma3-window16")],
)
def test_an_overlapped_draft_keeps_exactly_what_an_ordered_one_keeps(arch, overrides):
    _same_generation(build_tiny_model(arch, **overrides), build_tiny_model(arch, **overrides), budget=40, window=8)


def test_an_overlapped_draft_with_another_tokenizer_crosses_over_as_text(llama):
    _same_generation(llama, other_tokenizer_model(), budget=40, window=8, lookahead=6)


def test_overlap_with_rescoring_and_a_compressor(llama, draft):
    _same_generation(llama, draft, budget=40, window=8, rescore_every=8)
    compressor = SpecPC(draft, keep_ratio=0.5, progress=False)
    docs = [PROMPT, "The Loire is the longest river in France and flows into the Atlantic."]
    results = [
        SpecKV(llama, None, compressor=compressor, budget=40, window=8, overlap_draft=flag).generate(
            "Which river flows through Paris?", documents=docs, max_new_tokens=6
        )
        for flag in (False, True)
    ]
    assert results[1].draft_overlapped and results[0].token_ids == results[1].token_ids


def test_time_to_first_token_counts_an_overlapped_draft_once(llama, draft):
    ordered = SpecKV(llama, draft, budget=40, window=8, overlap_draft=False).generate(PROMPT, max_new_tokens=4)
    assert ordered.draft_seconds > 0
    assert ordered.time_to_first_token == pytest.approx(ordered.draft_seconds + ordered.prefill_seconds)
    overlapped = SpecKV(llama, draft, budget=40, window=8, overlap_draft=True).generate(PROMPT, max_new_tokens=4)
    assert overlapped.draft_seconds > 0
    assert overlapped.time_to_first_token == pytest.approx(overlapped.prefill_seconds)


def test_by_default_a_draft_on_the_targets_device_runs_first(llama, draft):
    result = SpecKV(llama, draft, budget=40, window=8).generate(PROMPT, max_new_tokens=4)
    assert result.lookahead_tokens > 0 and not result.draft_overlapped


def test_a_failing_overlapped_draft_raises_and_leaves_the_engine_usable(llama):
    # A draft whose tokenizer is the target's but whose embedding is too small: the
    # prompt's ids overflow it, so its forward fails inside the worker thread.
    broken = LoadedModel(model=build_tiny_model("llama", vocab_size=8).model, tokenizer=llama.tokenizer, name="broken")
    engine = SpecKV(llama, broken, budget=40, window=8, overlap_draft=True)
    with pytest.raises(IndexError):
        engine.generate(PROMPT, max_new_tokens=4)
    # The same engine, its draft replaced by a working one, overlaps again in the same worker.
    engine.draft = build_tiny_model("llama", num_hidden_layers=2)
    expected = SpecKV(llama, engine.draft, budget=40, window=8, overlap_draft=False).generate(PROMPT, max_new_tokens=4)
    result = engine.generate(PROMPT, max_new_tokens=4)
    assert result.draft_overlapped and result.token_ids == expected.token_ids


def test_overlap_draft_must_be_a_bool_or_none(llama, draft):
    with pytest.raises(ValueError, match="overlap_draft"):
        SpecKV(llama, draft, budget=40, window=8, overlap_draft="sometimes")


def test_an_answer_longer_than_planned_prefills_again_under_the_plan_it_needs():
    # The prefill starts before the answer exists, planned for `lookahead` tokens. Here the
    # draft's 3 tokens re-encode to 7 target tokens, which carries the 11-token prompt past
    # the 16-token sliding window: the overlapped call must redo its prefill under that plan.
    target, other = build_tiny_model("gemma3", **MIXED), other_tokenizer_model()
    prompt, settings = "Documents: The capital of France is Paris.", {"budget": 4, "window": 2, "lookahead": 3}
    ordered = SpecKV(target, other, overlap_draft=False, **settings).generate(prompt, max_new_tokens=1)
    overlapped = SpecKV(target, other, overlap_draft=True, **settings).generate(prompt, max_new_tokens=1)
    length, answer = ordered.prompt_tokens, ordered.lookahead_tokens
    assert plan_layers(target.model.config, length + 3) != plan_layers(target.model.config, length + answer)
    assert overlapped.lookahead_tokens == answer
    assert overlapped.token_ids == ordered.token_ids
    assert overlapped.cache_entries == ordered.cache_entries
