"""Unit tests for specrag.core.models: device/dtype resolution, tiny models, loading and caching."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from specrag.core import models
from specrag.core.bundles import BUNDLES
from specrag.core.models import (
    HubUnavailableError,
    LoadedModel,
    SlowTokenizerError,
    build_tiny_model,
    load_model,
    resolve_device,
    resolve_dtype,
    tiny_tokenizer,
)

ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]
MIXED_TEXT = "The café in 東京 sells 你好世界 cakes 🦄🎉 for 3€."


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend there is neither CUDA nor MPS, whatever machine the tests run on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend one CUDA device exists (nothing is allocated on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model saved like a real checkpoint folder."""
    tiny = build_tiny_model("qwen2")
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


# --- devices ---------------------------------------------------------------------------


def test_auto_device_falls_back_to_cpu(no_accelerators: None) -> None:
    assert resolve_device() == torch.device("cpu")


def test_auto_device_prefers_cuda_and_pins_its_index(fake_cuda: None) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == resolve_device("cuda:0")


def test_auto_device_uses_mps_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device() == torch.device("mps")


def test_explicit_device_passes_through() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_unavailable_device_is_named(no_accelerators: None, device: str) -> None:
    with pytest.raises(ValueError, match=device):
        resolve_device(device)


def test_malformed_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="gpu-please"):
        resolve_device("gpu-please")


# --- dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("FLOAT16", torch.float16),
        ("fp32", torch.float32),
        ("float32", torch.float32),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_explicit_dtype(name: str | torch.dtype, expected: torch.dtype) -> None:
    assert resolve_dtype(name, "cpu") == expected


@pytest.mark.parametrize("bad", ["int8", "half-ish", torch.int64])
def test_bad_dtype_is_rejected(bad: str | torch.dtype) -> None:
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(bad, "cpu")


@pytest.mark.parametrize(("bf16_ok", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_dtype_on_cuda(
    fake_cuda: None, monkeypatch: pytest.MonkeyPatch, bf16_ok: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_ok)
    assert resolve_dtype("auto", "cuda") == expected


def test_auto_dtype_on_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_dtype("auto", "mps") == torch.float16


@pytest.mark.parametrize(
    ("capability", "flags", "expected"),
    [
        ("AVX512", {"avx512f", "avx512_bf16"}, torch.bfloat16),
        ("AVX512", {"avx512f", "amx_bf16", "amx_tile"}, torch.bfloat16),
        ("AVX512", {"avx512f"}, torch.float32),
        ("AVX2", {"avx2", "avx512_bf16"}, torch.float32),
        ("DEFAULT", set(), torch.float32),
    ],
)
def test_auto_dtype_on_cpu_follows_bf16_support(
    monkeypatch: pytest.MonkeyPatch, capability: str, flags: set[str], expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(models, "_cpu_flags", lambda: frozenset(flags))
    assert resolve_dtype("auto", "cpu") == expected


# --- tiny models and their tokenizer ---------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_runs_forward(arch: str) -> None:
    tiny = build_tiny_model(arch)
    ids = tiny.tokenizer(MIXED_TEXT, return_tensors="pt")["input_ids"]
    logits = tiny.model(ids).logits
    assert logits.shape == (1, ids.shape[1], tiny.vocab_size)
    assert torch.isfinite(logits).all()
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert (tiny.num_layers, tiny.device, tiny.dtype) == (4, torch.device("cpu"), torch.float32)
    assert tiny.max_positions == 4096
    assert tiny.model.config._attn_implementation == "sdpa"


def test_tiny_model_is_deterministic_and_overridable() -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    first = build_tiny_model("llama").model(ids).logits
    second = build_tiny_model("llama").model(ids).logits
    assert torch.equal(first, second)
    assert build_tiny_model("llama", num_hidden_layers=2).num_layers == 2


def test_unknown_tiny_architecture() -> None:
    with pytest.raises(ValueError, match="mamba"):
        build_tiny_model("mamba")


def test_tiny_tokenizer_is_fast_byte_level_and_lossless() -> None:
    tokenizer = tiny_tokenizer()
    assert tokenizer.is_fast
    assert 500 <= len(tokenizer) <= 1000
    ids = tokenizer(MIXED_TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == MIXED_TEXT


def test_tiny_tokenizer_offsets_cover_cjk_and_emoji() -> None:
    """Byte tokens inside one character all point at that character's span."""
    encoding = tiny_tokenizer()(MIXED_TEXT, return_offsets_mapping=True, add_special_tokens=False)
    offsets = encoding["offset_mapping"]
    starts = [start for start, _ in offsets]
    assert starts == sorted(starts)
    assert all(0 <= start < end <= len(MIXED_TEXT) for start, end in offsets)
    covered = {i for start, end in offsets for i in range(start, end)}
    assert covered == set(range(len(MIXED_TEXT)))
    unicorn = MIXED_TEXT.index("🦄")
    on_unicorn = [span for span in offsets if span[0] <= unicorn < span[1]]
    assert len(on_unicorn) > 1, "an unseen emoji should split into several byte tokens"
    assert any(MIXED_TEXT[start:end] == "你" for start, end in offsets)


# --- load_model ------------------------------------------------------------------------


def test_load_local_folder_matches_the_saved_model(tiny_folder: Path) -> None:
    loaded = load_model(tiny_folder, device="cpu", dtype="fp32")
    reference = build_tiny_model("qwen2")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(loaded.model(ids).logits, reference.model(ids).logits)
    assert loaded.tokenizer.is_fast
    assert loaded.name == str(tiny_folder)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_load_model_reuses_the_resident_copy(tiny_folder: Path) -> None:
    first = load_model(tiny_folder, device="cpu", dtype="fp32")
    assert load_model(str(tiny_folder), device="cpu", dtype="float32") is first
    other_dtype = load_model(tiny_folder, device="cpu", dtype="bf16")
    assert other_dtype is not first
    assert other_dtype.dtype == torch.bfloat16


def test_loaded_model_passes_through() -> None:
    tiny = build_tiny_model()
    assert load_model(tiny) is tiny
    assert isinstance(tiny, LoadedModel)


def test_unreachable_hub_lists_offline_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import, so patch the constant as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError) as caught:
        load_model("no-such-org/no-such-model", device="cpu")
    message = str(caught.value)
    assert "hub is unreachable" in message
    assert all(name in message for name in BUNDLES)


def test_slow_tokenizer_is_refused(monkeypatch: pytest.MonkeyPatch, tiny_folder: Path) -> None:
    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(SlowTokenizerError, match="fast"):
        load_model(tiny_folder, device="cpu", dtype="fp16")
