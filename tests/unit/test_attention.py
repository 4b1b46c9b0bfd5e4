"""Captured window attention equals the model's own attention, without an L x L matrix."""

from __future__ import annotations

import threading

import pytest
import torch

from specrag.core.attention import AttentionCapture, capture_attention, enable_capture, window_attention_scores
from specrag.core.models import build_tiny_model

ARCHITECTURES = ["llama", "qwen2", "qwen3"]


def _reference_scores(model: torch.nn.Module, ids: torch.Tensor, window: int, start_layer: int) -> torch.Tensor:
    """Max over layers>=start, heads and the last ``window`` queries of weight * softmax,
    from eager attention's full matrices (test-only: this is the L x L path we avoid)."""
    model.set_attn_implementation("eager")
    try:
        attentions = model(ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    weights = torch.linspace(0, 1, window)
    best = torch.zeros(ids.shape[1])
    for layer, attention in enumerate(attentions):
        if layer < start_layer:
            continue
        last = attention[0, :, -window:, :].float() * weights[None, :, None]
        best = torch.maximum(best, last.amax(dim=(0, 1)))
    return best


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_capture_matches_eager_attention(arch: str) -> None:
    loaded = build_tiny_model(arch)
    model = loaded.model.float()
    ids = torch.randint(0, loaded.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _reference_scores(model, ids, window=8, start_layer=1)
        enable_capture(model)
        capture = AttentionCapture(num_keys=40, window=8, start_layer=1)
        with capture_attention(capture):
            model(ids)
    torch.testing.assert_close(capture.result()[0], expected, atol=1e-5, rtol=1e-4)
    assert capture.layers_seen == set(range(1, model.config.num_hidden_layers))


def test_capture_leaves_outputs_unchanged_and_is_inactive_outside_its_scope() -> None:
    loaded = build_tiny_model("llama")
    model = loaded.model
    ids = torch.arange(30)[None] % loaded.vocab_size
    with torch.no_grad():
        before = model(ids).logits
        enable_capture(model)
        capture = AttentionCapture(num_keys=30, window=4)
        with capture_attention(capture):
            during = model(ids).logits
        outside = AttentionCapture(num_keys=30, window=4)
        after = model(ids).logits
    torch.testing.assert_close(before, during)
    torch.testing.assert_close(before, after)
    assert outside.scores is None  # nothing leaks into captures that are not active


def test_captures_in_two_threads_do_not_mix() -> None:
    loaded = build_tiny_model("qwen2")
    model = loaded.model
    enable_capture(model)
    inputs = {
        name: torch.randint(0, loaded.vocab_size, (1, 64), generator=torch.Generator().manual_seed(seed))
        for name, seed in (("a", 2), ("b", 3))
    }

    def run(ids: torch.Tensor) -> torch.Tensor:
        capture = AttentionCapture(num_keys=ids.shape[1], window=16)
        with torch.no_grad(), capture_attention(capture):
            model(ids)
        return capture.result()[0].clone()

    sequential = {name: run(ids) for name, ids in inputs.items()}
    concurrent: dict[str, torch.Tensor] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        barrier.wait()
        for _ in range(5):
            concurrent[name] = run(inputs[name])

    threads = [threading.Thread(target=worker, args=(name,)) for name in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in inputs:
        torch.testing.assert_close(concurrent[name], sequential[name])


def test_window_scores_handle_gqa_and_never_allocate_a_square_matrix() -> None:
    keys_len, window = 4096, 16
    query = torch.randn(1, 8, window, 32)
    key = torch.randn(1, 2, keys_len, 32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        scores = window_attention_scores(query, key, scaling=32**-0.5, query_weights=torch.ones(window))
    assert scores.shape == (1, keys_len)
    square_bytes = keys_len * keys_len * 4
    biggest = max(event.cpu_memory_usage for event in prof.key_averages())
    assert biggest < square_bytes / 8, f"an op allocated {biggest} bytes"
    # causal inside the window: the last query may see every key, earlier ones not the later keys
    full = window_attention_scores(query, key, scaling=32**-0.5, query_weights=torch.ones(window))
    assert torch.all(full >= 0) and torch.all(full <= 1)


def test_capture_without_any_layer_says_why() -> None:
    with pytest.raises(RuntimeError, match="start_layer"):
        AttentionCapture(num_keys=3, window=2, start_layer=99).result()
