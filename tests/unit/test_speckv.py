"""SpecKV engine on tiny random models: exactness, budgets, positions, decoding, errors.

Random weights say nothing about answer quality; they are enough to check that the cache
holds what it should, that positions and masks are right (against ``model.generate`` and
against a masked full cache), and that the decode loop behaves.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from transformers import (
    DynamicCache,
    PreTrainedTokenizerFast,
    Qwen3NextConfig,
)

from speckv_inputs import MIXED, PROMPT, other_tokenizer_model
from specrag import LoadedModel, SpecKV, SpecKVResult, SpecPC, build_tiny_model
from specrag.core.models import cache_argument
from specrag.core.speckv.attention_scores import (
    DraftGuidedScores,
    RecentQueries,
    keep_indices,
    kv_head_scores,
    pool_scores,
)
from specrag.core.speckv.cache import (
    BUDGETED,
    WINDOWED,
    BudgetedCache,
    UnsupportedModelError,
    plan_layers,
)
from specrag.core.speckv.decoding import IncrementalText, Sampling, StopText, filter_logits, render_prompt

ARCHS = [
    pytest.param("llama", {}, id="llama"),
    pytest.param("qwen2", {}, id="qwen2"),
    pytest.param("qwen3", {}, id="qwen3"),
    pytest.param("gemma3", {}, id="gemma3"),
    pytest.param("gemma3", MIXED, id="gemma3-window16"),
]


@pytest.fixture(scope="module")
def draft() -> LoadedModel:
    """Overrides the shared draft: SpecKV's draft here is a shallower Llama than the target."""
    return build_tiny_model("llama", num_hidden_layers=2)


@pytest.fixture(scope="module")
def engine(llama, draft) -> SpecKV:
    return SpecKV(llama, draft, budget=40, window=8)


def _reference(loaded: LoadedModel, ids: list[int], new_tokens: int) -> list[int]:
    with torch.inference_mode():
        output = loaded.model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
    return output[0, len(ids) :].tolist()


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(("arch", "overrides"), ARCHS)
def test_large_budget_is_token_exact_with_generate(arch, overrides):
    target = build_tiny_model(arch, **overrides)
    engine = SpecKV(target, build_tiny_model(arch, **overrides), budget=4096)
    result = engine.generate(PROMPT, max_new_tokens=24)
    assert result.token_ids == _reference(target, engine.render(PROMPT), 24)
    assert not result.evicted and result.lookahead_tokens == 0 and result.draft_seconds == 0.0
    assert result.kv_bytes == result.full_kv_bytes


@pytest.mark.parametrize(("arch", "overrides"), ARCHS)
def test_small_budget_holds_exactly_the_budget_after_prefill(arch, overrides):
    target = build_tiny_model(arch, **overrides)
    engine = SpecKV(target, build_tiny_model(arch, **overrides), budget=40, window=8)
    new = 12
    result = engine.generate(PROMPT, max_new_tokens=new)
    assert result.evicted and result.prompt_tokens > 40
    assert result.lookahead_tokens == new  # automatic lookahead: min(max_new_tokens, 64)
    plan = plan_layers(target.model.config, result.prompt_tokens + new)
    for layer, kind in enumerate(plan.kinds):
        if kind == BUDGETED:
            assert result.prefill_cache_entries[layer] == 40
            assert result.cache_entries[layer] == 40 + len(result.token_ids) - 1
        else:  # sliding layers keep their own window, never more
            assert result.cache_entries[layer] == MIXED["sliding_window"] - 1
    assert result.peak_decode_entries <= 40 + len(result.token_ids)
    assert result.kv_bytes < result.full_kv_bytes


def test_rescoring_never_exceeds_the_budget(llama, draft):
    engine = SpecKV(llama, draft, budget=40, window=8, rescore_every=8)
    result = engine.generate(PROMPT, max_new_tokens=40)
    assert result.prefill_cache_entries == [32] * 4  # budget - rescore_every, room to grow
    assert result.peak_decode_entries == 40
    assert max(result.cache_entries) <= 40
    assert result.rescores == (len(result.token_ids) - 1) // 8


def test_rescoring_with_a_short_prompt_starts_once_the_budget_is_reached(llama):
    engine = SpecKV(llama, None, budget=120, window=8, rescore_every=16)
    result = engine.generate("The capital of France is", max_new_tokens=150)
    assert not result.evicted
    assert result.rescores >= 1
    assert result.peak_decode_entries == 120


def test_window_only_eviction_needs_no_draft(llama):
    result = SpecKV(llama, None, budget=40, window=8).generate(PROMPT, max_new_tokens=6)
    assert result.evicted and result.lookahead_tokens == 0 and result.draft_seconds == 0.0
    assert result.prefill_cache_entries == [40] * 4


def test_lookahead_setting_caps_the_draft(llama, draft):
    result = SpecKV(llama, draft, budget=40, window=8, lookahead=5).generate(PROMPT, max_new_tokens=12)
    assert result.lookahead_tokens == 5
    result = SpecKV(llama, draft, budget=40, window=8, max_lookahead=3).generate(PROMPT, max_new_tokens=12)
    assert result.lookahead_tokens == 3


def test_the_result_shows_the_draft_answer_that_scored(llama, draft):
    result = SpecKV(llama, draft, budget=40, window=8, lookahead=5).generate(PROMPT, max_new_tokens=12)
    alone = SpecKV(draft, None, budget=1 << 20).generate(PROMPT, max_new_tokens=5)
    assert result.lookahead_tokens == 5
    assert result.draft_answer == draft.tokenizer.decode(alone.token_ids, skip_special_tokens=True)
    assert SpecKV(llama, None, budget=40, window=8).generate(PROMPT, max_new_tokens=3).draft_answer == ""


def test_mean_reduction_also_keeps_the_budget(llama, draft):
    result = SpecKV(llama, draft, budget=40, window=8, reduction="mean").generate(PROMPT, max_new_tokens=4)
    assert result.prefill_cache_entries == [40] * 4


def test_greedy_is_deterministic(engine):
    first = engine.generate(PROMPT, max_new_tokens=10)
    assert engine.generate(PROMPT, max_new_tokens=10).token_ids == first.token_ids


# ---------------------------------------------------------------------------- cache mechanics
def test_evicted_cache_decodes_like_a_masked_full_cache(llama):
    """Positions continue the original prompt and kept keys keep their RoPE.

    Keeping the same entries in every head must equal full-cache decoding with the dropped
    prompt positions masked out for the new tokens.
    """
    model, config = llama.model, llama.model.config
    ids = llama.tokenizer(PROMPT)["input_ids"]
    length = len(ids)
    kept = sorted(set(range(0, length - 8, 3))) + list(range(length - 8, length))
    evicted = BudgetedCache(plan_layers(config, length + 4))
    full = DynamicCache(config=config)
    positions = torch.arange(length)[None]
    with torch.inference_mode():
        model(torch.tensor([ids]), position_ids=positions, **cache_argument(model, evicted))
        model(torch.tensor([ids]), position_ids=positions, **cache_argument(model, full))
        index = torch.tensor(kept)[None, None].expand(1, config.num_key_value_heads, -1)
        for layer in range(config.num_hidden_layers):
            evicted.keep(layer, index)
        visible = torch.zeros(length, dtype=torch.long)
        visible[kept] = 1
        for step, token in enumerate([5, 17, 42, 99]):
            position = torch.tensor([[length + step]])
            mask = torch.cat([visible, torch.ones(step + 1, dtype=torch.long)])[None]
            ours = model(torch.tensor([[token]]), position_ids=position, **cache_argument(model, evicted))
            reference = model(
                torch.tensor([[token]]),
                position_ids=position,
                **cache_argument(model, full),
                attention_mask=mask,
            )
            torch.testing.assert_close(ours.logits, reference.logits, atol=1e-5, rtol=1e-4)
    assert evicted.entries() == [len(kept) + 4] * config.num_hidden_layers


def test_rollback_restores_full_and_sliding_layers_exactly():
    loaded = build_tiny_model("gemma3", **MIXED)
    model, config = loaded.model, loaded.model.config
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    plan = plan_layers(config, len(ids) + 8)
    assert plan.kinds == (WINDOWED, BUDGETED, WINDOWED, BUDGETED)
    rolled, clean = BudgetedCache(plan), BudgetedCache(plan)
    positions = torch.arange(len(ids))[None]
    draft_answer = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.inference_mode():
        model(torch.tensor([ids]), position_ids=positions, **cache_argument(model, rolled))
        model(torch.tensor([ids]), position_ids=positions, **cache_argument(model, clean))
        rolled.start_rollback()
        model(
            draft_answer,
            position_ids=torch.arange(len(ids), len(ids) + 5)[None],
            **cache_argument(model, rolled),
        )
        rolled.rollback(5)
        for ours, reference in zip(rolled.layers, clean.layers, strict=True):
            assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)
        assert rolled.get_seq_length(0) == clean.get_seq_length(0)
        step = {"position_ids": torch.tensor([[len(ids)]])}
        a = model(torch.tensor([[7]]), **cache_argument(model, rolled), **step).logits
        b = model(torch.tensor([[7]]), **cache_argument(model, clean), **step).logits
    assert torch.equal(a, b)


def test_plan_treats_sliding_layers_as_full_when_the_sequence_fits_the_window():
    config = build_tiny_model("gemma3", **MIXED).model.config
    assert plan_layers(config, 16).kinds == (BUDGETED,) * 4
    assert plan_layers(config, 17).kinds == (WINDOWED, BUDGETED, WINDOWED, BUDGETED)


def test_models_it_cannot_serve_are_refused_clearly():
    with pytest.raises(UnsupportedModelError, match="linear_attention"):
        plan_layers(Qwen3NextConfig(num_hidden_layers=4), 10)
    only_sliding = build_tiny_model("gemma3", sliding_window=16)  # 4 layers, all sliding
    engine = SpecKV(only_sliding, None, budget=32, window=8)
    engine.generate("short", max_new_tokens=4)  # fits the window: served
    with pytest.raises(UnsupportedModelError, match="no full-attention layer"):
        engine.generate(PROMPT, max_new_tokens=4)


# ---------------------------------------------------------------------------- scoring
def _naive_scores(query, key, scaling, num_keys, reduction):
    """Full softmax matrix, for small inputs only."""
    batch, heads, n, _ = query.shape
    kv = key.shape[1]
    expanded = key.repeat_interleave(heads // kv, dim=1)
    logits = query @ expanded.transpose(-1, -2) * scaling
    k_len = key.shape[2]
    for i in range(n):
        logits[:, :, i, k_len - n + i + 1 :] = float("-inf")
    probs = torch.softmax(logits, dim=-1).reshape(batch, kv, heads // kv, n, k_len)[..., :num_keys]
    return probs.amax(dim=(2, 3)) if reduction == "max" else probs.mean(dim=(2, 3))


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_kv_head_scores_match_a_naive_softmax_per_kv_group(reduction):
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(1, 6, 5, 8, generator=generator)
    key = torch.randn(1, 2, 20, 8, generator=generator)
    ours = kv_head_scores(query, key, scaling=0.3, num_keys=15, reduction=reduction, query_chunk=2)
    torch.testing.assert_close(ours, _naive_scores(query, key, 0.3, 15, reduction))


def test_draft_guided_scores_equal_one_pass_over_prompt_and_answer():
    """Prompt forward + answer forward score exactly like one pass over both."""
    generator = torch.Generator().manual_seed(2)
    length, answer, window = 12, 4, 3
    query = torch.randn(1, 4, length + answer, 8, generator=generator)
    key = torch.randn(1, 2, length + answer, 8, generator=generator)
    observer = DraftGuidedScores(length, window, {0})
    observer.observe(0, query[:, :, :length], key[:, :, :length], 0.5)
    observer.observe(0, query[:, :, length:], key, 0.5)
    observer.observe(1, query, key, 0.5)  # not a scored layer: ignored
    expected = _naive_scores(query[:, :, length - window :], key, 0.5, length, "max")
    torch.testing.assert_close(observer.result(0), expected)
    with pytest.raises(RuntimeError, match="layer 1"):
        observer.result(1)


def test_recent_queries_keep_the_last_window():
    recorder = RecentQueries(window=3, layers={0})
    queries = [torch.full((1, 2, 1, 4), float(i)) for i in range(5)]
    for q in queries:
        recorder.observe(0, q, torch.zeros(1, 1, 1, 4), None)
    assert recorder._queries[0][0, 0, :, 0].tolist() == [2.0, 3.0, 4.0]
    assert recorder.scores(0, torch.randn(1, 1, 10, 4)).shape == (1, 1, 10)


def test_pool_and_keep_indices():
    scores = torch.tensor([[[0.0, 0.01, 0.9, 0.0, 0.0, 0.02, 0.1, 0.0, 0.5, 0.4]]])
    torch.testing.assert_close(pool_scores(scores, 3)[0, 0, :5], torch.tensor([0.01, 0.9, 0.9, 0.9, 0.02]))
    kept = keep_indices(scores, keep=5, protect_last=2)
    assert kept.tolist() == [[[2, 5, 6, 8, 9]]]  # best three of the first 8, then the tail
    assert keep_indices(scores, keep=2, protect_last=2).tolist() == [[[8, 9]]]
    with pytest.raises(ValueError):
        keep_indices(scores, keep=11, protect_last=2)


# ---------------------------------------------------------------------------- decoding
def test_sampling_is_seeded_private_and_filtered(engine):
    state = torch.get_rng_state()
    first = engine.generate(PROMPT, max_new_tokens=10, temperature=1.0, seed=7)
    again = engine.generate(PROMPT, max_new_tokens=10, temperature=1.0, seed=7)
    other = [engine.generate(PROMPT, max_new_tokens=10, temperature=1.0, seed=s).token_ids for s in (8, 9)]
    unseeded = engine.generate(PROMPT, max_new_tokens=10, temperature=1.5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not touched
    assert first.token_ids == again.token_ids
    assert any(ids != first.token_ids for ids in other)
    assert len(unseeded.token_ids) >= 1
    greedy = engine.generate(PROMPT, max_new_tokens=10).token_ids
    assert engine.generate(PROMPT, max_new_tokens=10, temperature=0.7, top_k=1, seed=1).token_ids == greedy
    assert engine.generate(PROMPT, max_new_tokens=10, temperature=0.7, top_p=1e-6, seed=1).token_ids == greedy


def test_filter_logits_keeps_nucleus_and_top_k():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(filter_logits(logits, 0, 0.7)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.81)).tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, 3, 1.0)).tolist() == [True, True, True, False]


def test_stop_strings_cut_the_text_and_streams_never_show_them(engine):
    full = engine.generate(PROMPT, max_new_tokens=30)
    assert full.finish_reason == "length" and len(full.text) > 12
    stop = full.text[8:11]
    cut = full.text.index(stop)
    stopped = engine.generate(PROMPT, max_new_tokens=30, stop=[stop, "never-there"])
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[:cut]
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    stream = engine.stream(PROMPT, max_new_tokens=30, stop=stop)
    deltas = list(stream)
    assert "".join(deltas) == stopped.text and stream.result == stream.result
    assert all(stop not in delta for delta in deltas)


def test_stream_deltas_join_to_the_text(engine):
    stream = engine.stream(PROMPT, max_new_tokens=16)
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.result
    deltas = list(stream)
    assert "".join(deltas) == stream.result.text
    assert stream.result.token_ids == engine.generate(PROMPT, max_new_tokens=16).token_ids


def test_incremental_text_never_splits_characters():
    tokenizer = build_tiny_model("llama").tokenizer
    text = "Ελληνικά ąę 🦀🐍 ñandú, 東京"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert sum("\ufffd" in tokenizer.decode([token]) for token in ids) > 10  # split characters
    decoder = IncrementalText(tokenizer)
    deltas = [decoder.push(token) for token in ids] + [decoder.flush()]
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == text


def test_stop_text_holds_back_possible_stop_prefixes():
    stops = StopText(["END!"])
    assert stops.add("hello E") == "hello "
    assert stops.add("N") == ""
    assert stops.add("x") == "ENx"
    assert stops.add(" more EN") == " more "
    assert stops.add("D! tail") == "" and stops.stopped
    assert stops.text == "hello ENx more "
    assert StopText([]).add("anything") == "anything"


def test_eos_ends_generation():
    target = build_tiny_model("llama")
    first = SpecKV(target, None, budget=4096).generate(PROMPT, max_new_tokens=3).token_ids[0]
    target.model.generation_config.eos_token_id = first
    result = SpecKV(target, None, budget=4096).generate(PROMPT, max_new_tokens=10)
    assert result.finish_reason == "eos" and result.token_ids == [first]


# ---------------------------------------------------------------------------- prompts
def test_chat_messages_use_the_template_or_a_plain_fallback(llama):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    plain = render_prompt(llama.tokenizer, messages)
    assert llama.tokenizer.decode(plain, skip_special_tokens=True) == "System: Be brief.\nUser: Hi?\nAssistant:"
    templated = PreTrainedTokenizerFast(tokenizer_object=llama.tokenizer.backend_tokenizer)
    templated.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    ids = render_prompt(templated, messages)
    assert templated.decode(ids) == "<system>Be brief.<user>Hi?<assistant>"
    engine = SpecKV(llama, None, budget=4096)
    result = engine.generate(messages, max_new_tokens=5)
    assert result.token_ids == _reference(llama, plain, 5)


def test_documents_fill_the_template_and_a_compressor_shrinks_them(llama, draft):
    documents = [PROMPT, "Photosynthesis turns sunlight, water and carbon dioxide into sugar. " * 4]
    plain = SpecKV(llama, draft, budget=40, window=8)
    uncompressed = plain.generate("What is the capital of France?", documents=documents, max_new_tokens=4)
    assert uncompressed.compression is None
    compressor = SpecPC(draft, keep_ratio=0.3)
    chained = SpecKV(llama, None, budget=40, window=8, compressor=compressor)
    assert chained.draft is draft  # one draft for both
    result = chained.generate(
        [{"role": "user", "content": "What is the capital of France?"}],
        documents=documents,
        max_new_tokens=4,
    )
    assert result.compression is not None
    assert result.prompt_tokens < uncompressed.prompt_tokens
    assert result.compression.kept_tokens <= result.compression.budget
    with pytest.raises(ValueError, match="one draft"):
        SpecKV(llama, build_tiny_model("llama"), budget=40, window=8, compressor=compressor)
    with pytest.raises(ValueError, match="user message"):
        plain.generate([{"role": "system", "content": "x"}], documents=["d"], max_new_tokens=2)


def test_a_draft_with_another_tokenizer_hands_its_answer_over_as_text(llama):
    other = other_tokenizer_model()
    engine = SpecKV(llama, other, budget=40, window=8, lookahead=6)
    assert not engine._shared_vocab
    result = engine.generate(PROMPT, max_new_tokens=6)
    draft_ids = other.tokenizer(PROMPT)["input_ids"]
    with torch.inference_mode():
        answer = other.model.generate(torch.tensor([draft_ids]), max_new_tokens=6, do_sample=False)
    text = other.tokenizer.decode(answer[0, len(draft_ids) :], skip_special_tokens=True)
    assert result.lookahead_tokens == len(llama.tokenizer.encode(text, add_special_tokens=False))
    assert result.prefill_cache_entries == [40] * 4


# ---------------------------------------------------------------------------- concurrency
def test_threads_share_one_engine_safely(engine):
    expected = engine.generate(PROMPT, max_new_tokens=8).token_ids
    results: list[list[int]] = []

    def work() -> None:
        results.append(engine.generate(PROMPT, max_new_tokens=8).token_ids)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 3


def test_async_generation_does_not_block_the_event_loop(engine):
    expected = engine.generate(PROMPT, max_new_tokens=12)

    async def main() -> tuple[SpecKVResult, int, str]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        result = await engine.agenerate(PROMPT, max_new_tokens=12)
        stream = engine.astream(PROMPT, max_new_tokens=12)
        text = "".join([delta async for delta in stream])
        done = True
        await task
        return result, ticks, text

    result, ticks, text = asyncio.run(main())
    assert result.token_ids == expected.token_ids and text == expected.text
    assert ticks > 3


def test_closing_an_async_stream_early_frees_the_engine(engine):
    async def main() -> None:
        stream = engine.astream(PROMPT, max_new_tokens=50)
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(main())
    started = time.perf_counter()
    assert engine.generate(PROMPT, max_new_tokens=2).token_ids
    assert time.perf_counter() - started < 30


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": 0}, ValueError, "budget"),
        ({"budget": -5}, ValueError, "budget"),
        ({"budget": 16}, ValueError, "budget .* window"),
        ({"budget": 64.0}, TypeError, "budget"),
        ({"budget": True}, TypeError, "budget"),
        ({"budget": "64"}, TypeError, "budget"),
        ({"budget": 64, "rescore_every": 40}, ValueError, "rescore_every"),
        ({"budget": 64, "windoww": 3}, ValueError, "windoww"),
        ({"budget": 64, "window": 0}, ValueError, "window"),
        ({"budget": 64, "reduction": "sum"}, ValueError, "reduction"),
    ],
)
def test_bad_construction_names_the_argument(llama, kwargs, error, match):
    with pytest.raises(error, match=match):
        SpecKV(llama, None, **kwargs)


@pytest.mark.parametrize(
    ("prompt", "kwargs", "error", "match"),
    [
        ("", {}, ValueError, "prompt"),
        ("   ", {}, ValueError, "prompt"),
        ([], {}, ValueError, "prompt"),
        ([{"role": "user", "content": ""}], {}, ValueError, "prompt"),
        ([{"role": "user"}], {}, TypeError, "content"),
        (42, {}, TypeError, "prompt"),
        ("hi", {"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ("hi", {"max_new_tokens": -1}, ValueError, "max_new_tokens"),
        ("hi", {"max_new_tokens": 2.0}, TypeError, "max_new_tokens"),
        ("hi", {"temperature": -1.0}, ValueError, "temperature"),
        ("hi", {"top_p": 0.0}, ValueError, "top_p"),
        ("hi", {"top_k": -1}, ValueError, "top_k"),
        ("hi", {"seed": "x"}, TypeError, "seed"),
        ("hi", {"stop": [1]}, TypeError, "stop"),
        ("hi", {"documents": "one string"}, TypeError, "documents"),
    ],
)
def test_bad_generation_input_names_the_argument(engine, prompt, kwargs, error, match):
    with pytest.raises(error, match=match):
        engine.stream(prompt, **kwargs)  # validated before any work starts


def test_sampling_validates_itself():
    with pytest.raises(TypeError, match="top_k"):
        Sampling(top_k=1.5)  # type: ignore[arg-type]
