"""SpecKV's ``policy="streaming"`` (StreamingLLM: attention sinks + recent entries) on tiny models.

What must hold whatever the weights: the cache keeps exactly the first ``sink_tokens`` prompt
entries and the most recent ones, as computed by the full prefill (checked against the keys
of a full cache, read through the package's attention capture, no mocks); nothing is evicted
when the budget covers the prompt, so output equals ``model.generate``; no draft runs and
no attention is scored; the budget and its validation are the attention policy's.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from speckv_inputs import MIXED, PROMPT
from specrag import LoadedModel, SpecKV, SpecPC, build_tiny_model
from specrag.core.attention import capture_attention
from specrag.core.models import cache_argument
from specrag.core.speckv.attention_scores import sink_and_recent_indices
from specrag.core.speckv.cache import plan_layers


class KeyLog:
    """Records the keys every attention call reads, per layer, in call order.

    Installed around ``generate``: the streaming policy runs its forwards without an
    observer of its own, so this outer capture sees them all (an engine that scored
    attention would install its own and shadow this one, which the tests detect).
    """

    def __init__(self) -> None:
        self.calls: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        self.calls.setdefault(layer_idx, []).append((query.shape[2], key.detach().clone()))

    def decode_keys(self, layer: int) -> list[torch.Tensor]:
        """Keys read by the one-token decode steps of ``layer``."""
        return [key for q_len, key in self.calls[layer] if q_len == 1]


def _full_keys(loaded: LoadedModel, ids: list[int]) -> list[torch.Tensor | None]:
    """Per layer, the keys a full (never evicted) cache holds after reading ``ids``."""
    config = loaded.model.config
    cache = DynamicCache(config=config)
    with torch.inference_mode():
        loaded.model(
            torch.tensor([ids]),
            position_ids=torch.arange(len(ids))[None],
            **cache_argument(loaded.model, cache),
            use_cache=True,
        )
    return [layer.keys for layer in cache.layers]


def _reference(loaded: LoadedModel, ids: list[int], new_tokens: int) -> list[int]:
    with torch.inference_mode():
        output = loaded.model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
    return output[0, len(ids) :].tolist()


# ---------------------------------------------------------------------------- what is kept
@pytest.mark.parametrize(
    ("arch", "overrides", "sinks"),
    [
        pytest.param("llama", {}, 4, id="llama"),
        pytest.param("llama", {}, 0, id="llama-no-sinks"),
        pytest.param("qwen2", {}, 4, id="qwen2"),
        pytest.param("gemma3", MIXED, 3, id="gemma3-window16"),
    ],
)
def test_prefill_keeps_the_sinks_and_the_most_recent_prompt_entries(arch, overrides, sinks):
    target = build_tiny_model(arch, **overrides)
    budget, new = 40, 6
    engine = SpecKV(target, None, budget=budget, window=8, policy="streaming", sink_tokens=sinks)
    ids = engine.render(PROMPT)
    length = len(ids)
    assert length > budget + 20  # a real middle to forget

    log = KeyLog()
    with capture_attention(log):
        result = engine.generate(PROMPT, max_new_tokens=new)

    assert result.evicted and result.prompt_tokens == length
    assert result.lookahead_tokens == 0 and result.draft_seconds == 0.0
    plan = plan_layers(target.model.config, length + new)
    budgeted = plan.budgeted_layers
    assert result.budgeted_layers == list(budgeted) and budgeted
    full = _full_keys(target, ids)
    expected = list(range(sinks)) + list(range(length - (budget - sinks), length))
    for layer in budgeted:
        assert result.prefill_cache_entries[layer] == budget
        assert result.cache_entries[layer] == budget + len(result.token_ids) - 1
        # The engine installed no observer of its own: this log saw the full-prompt prefill.
        assert log.calls[layer][0][0] == length
        first_step = log.decode_keys(layer)[0]  # kept prompt entries + the first new token
        assert first_step.shape[2] == budget + 1
        reference = full[layer]
        assert reference is not None
        torch.testing.assert_close(first_step[:, :, :budget, :], reference[:, :, expected, :], rtol=0, atol=1e-6)
    assert result.kv_bytes < result.full_kv_bytes


def test_rescoring_becomes_a_rolling_cut_that_keeps_the_sinks(qwen2):
    """With ``rescore_every`` the cache is cut back to sinks + recent entries while decoding.

    Layer 0's keys depend only on token and position, so every decode step's cache is
    compared, entry by entry, with a full forward over the prompt and the tokens fed; in
    deeper layers the sinks are prompt entries and must stay the full prefill's.
    """
    budget, every, sinks, new = 40, 8, 4, 40
    engine = SpecKV(qwen2, None, budget=budget, window=8, rescore_every=every, policy="streaming")
    ids = engine.render(PROMPT)
    length = len(ids)
    log = KeyLog()
    with capture_attention(log):
        result = engine.generate(PROMPT, max_new_tokens=new)
    assert len(result.token_ids) == new
    assert result.prefill_cache_entries == [budget - every] * 4
    assert result.rescores >= 3
    assert result.peak_decode_entries == budget and max(result.cache_entries) <= budget

    fed = ids + result.token_ids[:-1]  # the last token is never fed back
    full = _full_keys(qwen2, fed)
    keep = budget - every
    kept = list(range(sinks)) + list(range(length - (keep - sinks), length))
    steps = log.decode_keys(0)
    assert len(steps) == new - 1
    for step, keys in enumerate(steps):
        if len(kept) >= budget:  # the engine's trigger, before the step
            kept = kept[:sinks] + kept[-(keep - sinks) :]
        kept.append(length + step)
        torch.testing.assert_close(keys, full[0][:, :, kept, :], rtol=1e-4, atol=1e-5)
    prefill = _full_keys(qwen2, ids)
    for layer in range(1, 4):
        for keys in log.decode_keys(layer):
            torch.testing.assert_close(keys[:, :, :sinks, :], prefill[layer][:, :, :sinks, :], rtol=0, atol=1e-6)


def test_sink_and_recent_indices():
    indices = sink_and_recent_indices(10, 5, 2, batch=1, kv_heads=3, device=torch.device("cpu"))
    assert indices.shape == (1, 3, 5) and indices.dtype == torch.long
    assert indices[0, 2].tolist() == [0, 1, 7, 8, 9]
    only_recent = sink_and_recent_indices(6, 3, 0, batch=1, kv_heads=1, device=torch.device("cpu"))
    assert only_recent.tolist() == [[[3, 4, 5]]]
    assert sink_and_recent_indices(4, 4, 4, batch=1, kv_heads=1, device=torch.device("cpu")).tolist() == [
        [[0, 1, 2, 3]]
    ]
    with pytest.raises(ValueError, match="sinks"):
        sink_and_recent_indices(10, 3, 4, batch=1, kv_heads=1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="keep"):
        sink_and_recent_indices(4, 5, 1, batch=1, kv_heads=1, device=torch.device("cpu"))


# ---------------------------------------------------------------------------- no eviction
def test_a_budget_covering_the_prompt_equals_the_full_cache(llama):
    ids = SpecKV(llama, None, budget=64, policy="streaming").render(PROMPT)
    expected = _reference(llama, ids, 16)
    for budget in (4096, len(ids)):  # exactly the prompt: nothing to evict either
        result = SpecKV(llama, None, budget=budget, policy="streaming").generate(PROMPT, max_new_tokens=16)
        assert not result.evicted
        assert result.token_ids == expected
        assert result.prefill_cache_entries == [len(ids)] * 4
        assert result.kv_bytes == result.full_kv_bytes
    attention = SpecKV(llama, None, budget=4096).generate(PROMPT, max_new_tokens=16)
    assert attention.token_ids == expected


# ---------------------------------------------------------------------------- decoding
def test_streaming_is_deterministic_and_stays_within_the_budget(qwen2):
    engine = SpecKV(qwen2, None, budget=40, window=8, rescore_every=1, policy="streaming")
    first = engine.generate(PROMPT, max_new_tokens=30)
    again = engine.generate(PROMPT, max_new_tokens=30)
    assert first.token_ids == again.token_ids and first.text == again.text
    assert len(first.token_ids) == 30 and first.finish_reason == "length"
    # rescore_every=1 is StreamingLLM proper: a constant-size rolling cache.
    assert first.prefill_cache_entries == [39] * 4
    assert first.peak_decode_entries == 40 and max(first.cache_entries) <= 40
    assert first.rescores == 28  # 29 forwards; each after the first starts with a cut
    assert first.kv_bytes < first.full_kv_bytes
    sampled = [engine.generate(PROMPT, max_new_tokens=12, temperature=1.0, seed=3).token_ids for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_a_compressor_still_compresses_but_guides_no_eviction(llama):
    draft = build_tiny_model("llama", num_hidden_layers=2)
    compressor = SpecPC(draft, keep_ratio=0.5, progress=False)
    engine = SpecKV(llama, None, budget=32, window=8, compressor=compressor, policy="streaming")
    documents = [PROMPT, "The weather in the valley is mild all year round. " * 4]
    result = engine.generate("What is the capital of France?", documents=documents, max_new_tokens=4)
    assert result.compression is not None
    assert result.evicted and result.lookahead_tokens == 0 and result.draft_seconds == 0.0
    assert result.prefill_cache_entries == [32] * 4


# ---------------------------------------------------------------------------- bad input
def test_a_draft_is_refused_with_the_streaming_policy(llama):
    draft = build_tiny_model("llama", num_hidden_layers=2)
    with pytest.raises(ValueError, match="streaming.*draft"):
        SpecKV(llama, draft, budget=64, policy="streaming")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 64, "sink_tokens": -1}, "sink_tokens"),
        ({"budget": 64, "sink_tokens": 64}, r"sink_tokens .*\(budget = 64\)"),
        ({"budget": 64, "sink_tokens": 100}, "sink_tokens"),
        ({"budget": 64, "rescore_every": 16, "sink_tokens": 48}, r"\(budget - rescore_every = 48\)"),
        ({"budget": 16}, "budget .* window"),  # the attention policy's rule, unchanged
        ({"budget": 64, "rescore_every": 40}, "rescore_every"),
        ({"budget": 64, "lookahead": 8}, "lookahead"),
        ({"budget": 64, "policy": "random"}, "policy"),
    ],
)
def test_bad_streaming_settings_name_the_argument(llama, kwargs, match):
    settings = {"policy": "streaming", **kwargs}
    with pytest.raises(ValueError, match=match):
        SpecKV(llama, None, **settings)
