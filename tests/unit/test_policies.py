"""The contract every registered eviction policy keeps, on tiny real models.

Parametrised over :data:`specrag.POLICIES`, so a new policy is covered by registering it:

- the budget is held: after prefill every budgeted layer holds exactly the budget, and
  with ``rescore_every`` it never holds more during decoding;
- kept entries are entries of the full cache at their original positions (same keys, so
  the same RoPE), in order, with the last ``window`` prompt entries among them;
- with nothing to evict, greedy output equals ``model.generate`` token for token;
- ``select`` returns ascending, distinct, in-range indices of the asked shape.

Policy-specific behaviour (what exactly is kept) is tested next to each policy's own tests
(``test_speckv.py``, ``test_speckv_streaming.py``, and the key-norm tests below).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from specrag import POLICIES, LoadedModel, SpecKV, build_tiny_model
from specrag.core.attention import capture_attention
from specrag.core.models import cache_argument
from specrag.core.speckv.policies import EvictionPolicy, KeyNorm, make_policy

PROMPT = (
    "Documents: The capital of France is Paris. The river Seine flows through the city. "
    "Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean. "
    "In 1969 two astronauts walked on the Moon while a third one waited in orbit above them. "
    "Question: What is the capital of France? Answer: The"
)
NAMES = sorted(POLICIES)
WINDOW = 8


@pytest.fixture(scope="module")
def small_draft() -> LoadedModel:
    return build_tiny_model("llama", num_hidden_layers=2)


def _engine(name: str, target: LoadedModel, draft: LoadedModel, budget: int, **settings: object) -> SpecKV:
    uses_draft = POLICIES[name].uses_draft
    return SpecKV(target, draft if uses_draft else None, budget=budget, window=WINDOW, policy=name, **settings)


class KeyLog:
    """Keys every attention call reads, per layer (an outer capture around ``generate``)."""

    def __init__(self) -> None:
        self.calls: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        self.calls.setdefault(layer_idx, []).append((query.shape[2], key.detach().clone()))

    def first_decode_keys(self, layer: int) -> torch.Tensor:
        return next(key for q_len, key in self.calls[layer] if q_len == 1)


def _full_keys(loaded: LoadedModel, ids: list[int]) -> list[torch.Tensor]:
    cache = DynamicCache(config=loaded.model.config)
    with torch.inference_mode():
        loaded.model(
            torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], **cache_argument(loaded.model, cache)
        )
    return [layer.keys for layer in cache.layers]


@pytest.mark.parametrize("name", NAMES)
def test_the_budget_is_held_after_prefill_and_while_decoding(name, qwen2, small_draft):
    budget = 40
    result = _engine(name, qwen2, small_draft, budget).generate(PROMPT, max_new_tokens=10)
    assert result.evicted and result.prompt_tokens > budget
    assert all(result.prefill_cache_entries[layer] == budget for layer in result.budgeted_layers)
    assert result.kv_bytes < result.full_kv_bytes
    rolling = _engine(name, qwen2, small_draft, budget, rescore_every=4).generate(PROMPT, max_new_tokens=24)
    assert rolling.rescores > 0
    assert rolling.peak_decode_entries <= budget
    assert all(rolling.cache_entries[layer] <= budget for layer in rolling.budgeted_layers)


@pytest.mark.parametrize("name", NAMES)
def test_kept_entries_are_full_cache_entries_at_their_positions_with_the_window(name, llama, small_draft):
    budget = 32
    engine = _engine(name, llama, small_draft, budget)
    ids = engine.render(PROMPT)
    full = _full_keys(llama, ids)
    log = KeyLog()
    with capture_attention(log):  # decode steps run without an observer of the engine's
        result = engine.generate(PROMPT, max_new_tokens=3)
    assert result.evicted
    for layer in result.budgeted_layers:
        read = log.first_decode_keys(layer)[0]  # (kv_heads, budget + 1, dim): kept + the new token
        assert read.shape[1] == budget + 1
        reference = full[layer][0]  # (kv_heads, length, dim)
        for head in range(read.shape[0]):
            distance = torch.cdist(read[head, :budget].double(), reference[head].double())
            positions = distance.argmin(dim=-1)
            # Each kept key is a full-cache key (tiny float noise from the gather), and no
            # other position is anywhere near it: same key, same position, same RoPE.
            assert float(distance.min(dim=-1).values.max()) < 1e-3
            assert float(distance.topk(2, largest=False).values[:, 1].min()) > 0.05
            assert positions.tolist() == sorted(set(positions.tolist()))  # distinct, in order
            assert positions[-WINDOW:].tolist() == list(range(len(ids) - WINDOW, len(ids)))


@pytest.mark.parametrize("name", NAMES)
def test_nothing_evicted_equals_generate(name, llama, small_draft):
    ids = SpecKV(llama, None, budget=64).render(PROMPT)
    with torch.inference_mode():
        expected = llama.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :]
    result = _engine(name, llama, small_draft, len(ids)).generate(PROMPT, max_new_tokens=12)
    assert not result.evicted
    assert result.token_ids == expected.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_select_returns_sorted_distinct_indices_of_the_asked_shape(name):
    policy: EvictionPolicy = POLICIES[name]()
    generator = torch.Generator().manual_seed(0)
    entries, keep = 50, 20
    keys = torch.randn(1, 2, entries, 8, generator=generator)
    observer = policy.observer("prefill", prompt_length=entries, window=WINDOW, layers=frozenset({0}))
    if observer is not None:
        observer.observe(0, torch.randn(1, 4, entries, 8, generator=generator), keys, None)
    indices = policy.select(0, keys, keep, WINDOW, observer)
    assert indices.shape == (1, 2, keep) and indices.dtype == torch.long
    for row in indices[0]:
        assert row.tolist() == sorted(set(row.tolist())) and 0 <= int(row.min()) and int(row.max()) < entries
        assert row[-WINDOW:].tolist() == list(range(entries - WINDOW, entries))


def test_the_registry_names_every_policy_once_and_refuses_foreign_settings():
    assert len(NAMES) == len(set(NAMES)) >= 4
    assert all(cls.name == name for name, cls in POLICIES.items())
    with pytest.raises(ValueError, match="sink_tokens: not a setting of policy 'knorm'"):
        make_policy("knorm", {"sink_tokens": 4}, has_draft=False)
    with pytest.raises(ValueError, match="unknown policy 'h2o'"):
        make_policy("h2o", has_draft=False)


# ---------------------------------------------------------------------------- key norm
def test_key_norm_keeps_the_lowest_norm_keys_per_head_plus_the_window():
    generator = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 2, 30, 4, generator=generator)
    indices = KeyNorm().select(0, keys, keep=12, window=4, observer=None)
    norms = keys.norm(dim=-1)[0]
    for head in range(2):
        expected = sorted(norms[head, :26].argsort()[:8].tolist()) + [26, 27, 28, 29]
        assert indices[0, head].tolist() == expected
    assert indices[0, 0].tolist() != indices[0, 1].tolist()  # every KV head chooses its own


def test_key_norm_reads_no_attention_and_runs_no_draft(llama, small_draft):
    policy = KeyNorm()
    assert policy.observer("prefill", prompt_length=10, window=4, layers=frozenset({0})) is None
    assert not policy.uses_draft
    with pytest.raises(ValueError, match="policy 'knorm' runs no draft"):
        SpecKV(llama, small_draft, budget=32, policy="knorm")
    result = SpecKV(llama, None, budget=32, window=8, policy="knorm").generate(PROMPT, max_new_tokens=4)
    assert result.lookahead_tokens == 0 and result.draft_seconds == 0.0
